"""`hpcqueue run`: the embedded default, no cluster."""

from conftest import hq


def test_run_each_line_of_shell_commands(tmp_path):
    lines = [f"echo line-{i}" for i in range(1000)]
    (tmp_path / "commands.txt").write_text("\n".join(lines) + "\n")
    p = hq("run", "--each-line", "commands.txt", cwd=tmp_path, timeout=120)
    out = p.stdout.splitlines()
    assert sorted(out) == sorted(f"line-{i}" for i in range(1000))
    assert "1000 tasks, 1000 finished" in p.stderr


def test_run_array_with_a_command_and_failures(tmp_path):
    p = hq("run", "--array", "1-20", "--", "sh", "-c", 'test $((HPCQUEUE_TASK_ID % 5)) -ne 0',
           cwd=tmp_path, check=False)
    assert p.returncode == 1
    assert "20 tasks, 16 finished, 4 failed" in p.stderr
    assert "failed: task 5: exit code 1" in p.stderr


def test_run_from_stdin_skips_blank_and_comment_lines(tmp_path):
    p = hq("run", "--each-line", "-", input="# a comment\n\necho a\necho b\n", cwd=tmp_path)
    assert sorted(p.stdout.split()) == ["a", "b"]
    assert "2 tasks, 2 finished" in p.stderr
