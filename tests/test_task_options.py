"""The task options of issue 14: --max-fails, --stdin, --task-dir, --tasks with
--each-line; a missing --cwd and lines that are not UTF-8."""

import json
import os
import time

import pytest
from conftest import one_clear_line

from hpcqueue.exceptions import UsageError
from hpcqueue.jobspec import make_spec, read_lines
from hpcqueue.worker import oom


def job(cluster, ref="1"):
    return json.loads(cluster.hq("job", "info", ref, "--output", "json").stdout)


def tasks(cluster, ref="1"):
    return json.loads(cluster.hq("task", "list", ref, "--output", "json").stdout)


def test_max_fails_cancels_the_job_after_the_second_failure(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "1")
    # one at a time: tasks 1 and 2 fail at once, the others would take long and succeed
    cluster.hq("submit", "--array", "1-10", "--max-fails", "2", "--stdout", "none", "--",
               "sh", "-c", 'test "$HPCQUEUE_TASK_ID" -gt 2 && sleep 30', cwd=tmp_path)
    t0 = time.monotonic()
    cluster.hq("job", "wait", "1", timeout=60, check=False)
    assert time.monotonic() - t0 < 20  # canceled, not run to the end
    info = job(cluster)
    assert (info["failed"], info["finished"], info["canceled"]) == (2, 0, 8), info
    assert "--max-fails 2" in cluster.log("server.log")


def test_stdin_from_a_file_and_from_the_submitters_stdin(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    (tmp_path / "in.txt").write_bytes(b"hello\n\xffbytes\n")
    cluster.hq("submit", "--array", "1-2", "--stdin", "in.txt", "--", "sh", "-c", "cat",
               cwd=tmp_path)
    cluster.hq("submit", "--array", "1-2", "--stdin", "-", "--", "sh", "-c", "wc -l",
               cwd=tmp_path, input="a\nb\nc\n")
    cluster.hq("job", "wait", "all", timeout=60)
    for t in (1, 2):
        assert (tmp_path / "job-1" / f"{t}.stdout").read_bytes() == b"hello\n\xffbytes\n"
        assert (tmp_path / "job-2" / f"{t}.stdout").read_text().strip() == "3"
    assert job(cluster, "1")["spec"]["stdin"] == "13 bytes"
    p = cluster.hq("submit", "--stdin", "missing.txt", "--", "true", cwd=tmp_path,
                   check=False)
    one_clear_line(p, "--stdin", "missing.txt")


def test_task_dir_is_removed_unless_a_failed_task_keeps_it(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    seen = tmp_path / "seen"
    script = (f'echo "$HPCQUEUE_TASK_DIR" >> {seen}; test -d "$HPCQUEUE_TASK_DIR" && '
              'test -z "$(ls -A "$HPCQUEUE_TASK_DIR")" && touch "$HPCQUEUE_TASK_DIR/x" && '
              'test "$HPCQUEUE_TASK_ID" != 2')
    cluster.hq("submit", "--array", "1-2", "--task-dir", "--stdout", "none", "--",
               "sh", "-c", script)
    cluster.hq("submit", "--array", "1-2", "--task-dir", "--keep-task-dir-on-fail",
               "--stdout", "none", "--", "sh", "-c", script)
    cluster.hq("job", "wait", "all", timeout=60, check=False)
    dirs = seen.read_text().split()
    assert len(dirs) == 4 and len(set(dirs)) == 4, dirs
    assert [j["failed"] for j in (job(cluster, "1"), job(cluster, "2"))] == [1, 1]
    kept = [t for t in tasks(cluster, "2") if t["state"] == "failed"][0]
    assert "its task dir is kept" in kept["error"]
    left = [d for d in dirs if (tmp_path / d).exists()]
    assert len(left) == 1 and left[0] in kept["error"], (left, kept)
    assert (tmp_path / left[0] / "x").exists()
    p = cluster.hq("submit", "--keep-task-dir-on-fail", "--", "true", check=False)
    one_clear_line(p, "--keep-task-dir-on-fail needs --task-dir")


def test_tasks_of_each_line_keep_their_ids(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    (tmp_path / "p.txt").write_text("a\n\nb\nc\nd\ne\n")  # blank lines are not tasks
    cluster.hq("submit", "--each-line", "p.txt", "--tasks", "1,3-4", "--", "sh", "-c",
               'echo "$HPCQUEUE_TASK_ID $HPCQUEUE_ENTRY"', cwd=tmp_path)
    cluster.hq("job", "wait", "1", timeout=60)
    rows = tasks(cluster)
    assert [(t["id"], t["entry"]) for t in rows] == [(1, "b"), (3, "d"), (4, "e")]
    assert (tmp_path / "job-1" / "3.stdout").read_text() == "3 d\n"
    p = cluster.hq("submit", "--each-line", "p.txt", "--tasks", "4-5", "--", "true",
                   cwd=tmp_path, check=False)
    one_clear_line(p, "--tasks 4-5", "holds 5 tasks (ids 0-4)")
    p = cluster.hq("submit", "--array", "1-3", "--tasks", "1", "--", "true", check=False)
    one_clear_line(p, "--tasks picks tasks of --each-line")
    p = cluster.hq("submit", "--each-line", "p.txt", "--tasks", "3-1", "--", "true",
                   cwd=tmp_path, check=False)
    one_clear_line(p, "invalid --tasks '3-1'")


def test_missing_cwd_fails_the_task_and_creates_nothing(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    missing = tmp_path / "nonexistent"
    cluster.hq("submit", "--cwd", str(missing), "--", "true")
    cluster.hq("job", "wait", "1", timeout=60, check=False)
    [row] = tasks(cluster)
    assert row["state"] == "failed"
    assert str(missing) in row["error"] and "no such directory" in row["error"], row
    assert not missing.exists()


def test_lines_that_are_not_utf8_are_refused_with_their_number(cluster, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\ncaf\xe9 au lait\n")
    with pytest.raises(UsageError, match="line 3 is not UTF-8 text .byte 0xe9 at column 4"):
        read_lines(str(bad))
    cluster.start_server()
    p = cluster.hq("submit", "--each-line", str(bad), "--", "true", check=False)
    one_clear_line(p, "line 3 is not UTF-8", "iconv")
    p = cluster.hq("submit", "--each-line", "-", "--", "true", input="ok\n\0\n",
                   check=False)
    assert "Traceback" not in p.stderr and p.returncode != 0, p.stderr


def test_spec_of_the_task_options():
    spec = make_spec({"max_fails": 3, "task_dir": True, "stdin_data": b"x"}, ["true"],
                     submit_dir="/")
    assert (spec["max_fails"], spec["task_dir"], spec["stdin"]) == (3, "remove", b"x")
    assert "max_fails" not in make_spec({}, ["true"], submit_dir="/")


@pytest.mark.skipif(not os.path.exists("/proc/self/oom_score_adj"), reason="Linux only")
def test_the_oom_killer_picks_a_task_before_its_worker(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    cluster.hq("submit", "--", "sh", "-c", "sleep 0.3; cat /proc/$$/oom_score_adj",
               cwd=tmp_path)
    cluster.hq("job", "wait", "1", timeout=60)
    own = int(open("/proc/self/oom_score_adj").read())  # the worker inherits ours
    assert int((tmp_path / "job-1" / "0.stdout").read_text()) == min(1000, own + 500)


def test_oom_watch_tells_when_the_oom_killer_struck(tmp_path):
    events = tmp_path / "memory.events"
    events.write_text("low 0\noom 0\noom_kill 2\n")
    watch = oom.OomWatch()
    watch.path, watch.seen = str(events), 2
    assert not watch.killed()
    events.write_text("low 0\noom 1\noom_kill 3\n")
    assert watch.killed() and not watch.killed()
