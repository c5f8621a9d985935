"""The command line: bad input gets one clear line and no traceback."""

import json

import pytest
from conftest import hq, one_clear_line, wait_for


@pytest.mark.parametrize("args,needles", [
    (["submit", "--array", "5-1", "--", "true"], ["--array '5-1'", "ends before it starts"]),
    (["submit", "--each-line", "/no/such/file", "--", "true"], ["no such file", "/no/such/file"]),
    (["submit", "--cpus", "x", "--", "true"], ["--cpus"]),
    (["submit", "--time-limit", "5q", "--", "true"], ["--time-limit", "5q"]),
    (["submit", "--resource", "gpus", "--", "true"], ["gpus", "NAME=COUNT"]),
    (["submit", "--array", "1-3", "--each-line", "f", "--", "true"], ["cannot be combined"]),
    (["submit"], ["no command"]),
    (["submit", "--stdout", "%{BOGUS}", "--", "true"], ["unknown placeholder"]),
    (["job", "info", "abc"], ["not a job id"]),
    (["frobnicate"], ["No such command"]),
    (["worker", "start", "--on-server-lost", "maybe"], ["--on-server-lost"]),
])
def test_bad_arguments(tmp_path, args, needles):
    one_clear_line(hq(*args, server_dir=tmp_path / "sd", check=False, cwd=tmp_path), *needles)


def test_no_server(tmp_path):
    p = hq("job", "list", server_dir=tmp_path / "nothing", check=False)
    one_clear_line(p, "no server in", "hpcqueue server start")


def test_worker_without_server(tmp_path):
    p = hq("worker", "start", server_dir=tmp_path / "nothing", check=False)
    one_clear_line(p, "no server in")


def test_journal_that_is_not_ours(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("do not lose me\n")
    p = hq("server", "start", "--journal", notes, server_dir=tmp_path / "sd", check=False)
    one_clear_line(p, "not an hpcqueue journal")
    assert notes.read_text() == "do not lose me\n"


def test_bad_requests_lose_nothing(cluster):
    cluster.start_server()
    cluster.hq("submit", "--array", "1-10", "--stdout", "none", "--", "true")
    one_clear_line(cluster.hq("job", "info", "99", check=False), "no job 99")
    one_clear_line(cluster.hq("task", "info", "1", "5000", check=False), "no task 5000")
    one_clear_line(cluster.hq("submit", "--array", "9-2", "--", "true", check=False), "9-2")
    jobs = json.loads(cluster.hq("job", "list", "--output", "json").stdout)
    assert [(j["id"], j["tasks"]) for j in jobs] == [(1, 10)]
    cluster.start_worker()
    assert "10 finished" in cluster.hq("job", "wait", "1", timeout=30).stdout


def test_failed_and_resubmit_loop(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    (tmp_path / "p.txt").write_text("1\n2\n3\n4\n")
    cluster.hq("submit", "--each-line", "p.txt", "--stdout", "none", "--stderr", "none", "--",
               "sh", "-c", 'test $((HPCQUEUE_ENTRY % 2)) -eq 0', cwd=tmp_path)
    p = cluster.hq("job", "wait", "1", check=False, timeout=30)
    assert p.returncode == 1 and "2 failed" in p.stdout
    assert cluster.hq("job", "failed", "1").stdout.split() == ["1", "3"]
    info = json.loads(cluster.hq("task", "info", "1", "0", "--output", "json").stdout)
    assert info["exit_code"] == 1 and info["entry"] == "1" and info["worker"] == 1
    failed = json.loads(cluster.hq("task", "list", "1", "--filter", "failed",
                                   "--output", "json").stdout)
    assert [t["id"] for t in failed] == [0, 2]


def test_cancel_and_job_list_filter(cluster):
    cluster.start_server()
    cluster.start_worker("--cpus", "1")
    cluster.hq("submit", "--array", "1-100", "--stdout", "none", "--", "sleep", "10")
    wait_for(lambda: json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
             ["running"] == 1, what="a running task")
    assert "canceled job(s) 1" in cluster.hq("job", "cancel", "1").stdout
    p = cluster.hq("job", "wait", "1", check=False)
    assert p.returncode == 1 and "100 canceled" in p.stdout
    assert json.loads(cluster.hq("job", "list", "--filter", "canceled", "--output",
                                 "json").stdout)[0]["id"] == 1
    # the worker is free again: a new job runs at once
    cluster.hq("submit", "--stdout", "none", "--", "true")
    assert "1 finished" in cluster.hq("job", "wait", "2", timeout=30).stdout


def test_submit_wait_and_progress(cluster):
    cluster.start_server()
    cluster.start_worker()
    p = cluster.hq("submit", "--array", "1-50", "--stdout", "none", "--progress", "--", "true",
                   timeout=60)
    assert "50 finished" in p.stdout and "50/50" in p.stderr
    p = cluster.hq("job", "progress", "all")
    assert "50/50" in p.stderr


@pytest.mark.parametrize("group", [[], ["job"], ["task"], ["alloc"], ["config"], ["server"],
                                   ["worker"], ["journal"]])
def test_a_bare_group_prints_its_help(tmp_path, group):
    import click

    from hpcqueue.cli import cli

    p = hq(*group, server_dir=tmp_path / "sd")  # exit 0 (hq checks it)
    assert p.stderr == "" and p.stdout.startswith(f"Usage: hpcqueue {' '.join(group)}".strip())
    command = cli
    for name in group:
        command = command.get_command(None, name)
    assert isinstance(command, click.Group)
    commands = p.stdout.split("Commands:")[1].split()
    assert set(command.list_commands(None)) <= set(commands)


def test_run_says_where_output_goes(tmp_path):
    p = hq("run", "--help")
    assert "goes to this terminal" in p.stdout and "job-%{JOB_ID}" in p.stdout
    assert "default: this process's stdout" in " ".join(p.stdout.split())
    one_clear_line(hq("run", check=False, cwd=tmp_path), "no command", "hpcqueue run --")
