"""Streaming submission (`submit --each-line -` from a pipe) and failure reports, against the
real command line and server: lines run while stdin is still open, bundles, open jobs across
a restart, `--failures`, and bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import hq, one_clear_line, wait_for

from hpcqueue.cli.jobspec import DEFAULT_BUNDLE_SIZE, DEFAULT_BUNDLE_WAIT, Bundling, bundling
from hpcqueue.exceptions import UsageError


class Feeder:
    """`hpcqueue submit ARGS` with a pipe for stdin that the test holds open."""

    def __init__(self, cluster, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcqueue", "submit", *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir)),
            cwd=cluster.tmp, start_new_session=True)
        cluster.procs.append(self.proc)  # killed at the end, whatever happens

    def line(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self, timeout=60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def job(cluster, job_id=1) -> dict:
    return json.loads(cluster.hq("job", "info", str(job_id), "--output", "json").stdout)


def tasks(cluster, job_id=1) -> int | None:
    """How many tasks the job has (None: not submitted yet), for wait_for."""
    p = cluster.hq("job", "info", str(job_id), "--output", "json", check=False)
    return json.loads(p.stdout)["tasks"] if p.returncode == 0 else None


# ------------------------------------------------------------------ when to stream


@pytest.mark.parametrize("opts,is_file,expected", [
    ({"each_line": "-"}, False, Bundling(DEFAULT_BUNDLE_SIZE, DEFAULT_BUNDLE_WAIT)),
    ({"each_line": "-"}, True, None),  # a file on stdin is read whole, as before
    ({"each_line": "-", "bundle_size": 2}, True, Bundling(2, DEFAULT_BUNDLE_WAIT)),
    ({"each_line": "-", "bundle_wait": 0.0}, False, Bundling(DEFAULT_BUNDLE_SIZE, 0.0)),
    ({"each_line": "-", "bundle_size": 5, "bundle_wait": 30.0}, False, Bundling(5, 30.0)),
    ({"each_line": "tasks.txt"}, False, None),
    ({"array": "1-3"}, False, None),
    ({}, False, None),
])
def test_when_submit_streams(opts, is_file, expected):
    assert bundling(opts, is_file) == expected


@pytest.mark.parametrize("opts", [
    {"each_line": "tasks.txt", "bundle_size": 2}, {"array": "1-3", "bundle_wait": 1.0},
    {"from_json": "-", "bundle_size": 1}, {"bundle_wait": 1.0},
])
def test_bundle_options_need_each_line_stdin(opts):
    with pytest.raises(UsageError, match="needs --each-line -"):
        bundling(opts, False)


@pytest.mark.parametrize("args,needles", [
    (["--each-line", "-", "--bundle-size", "0"], ["--bundle-size", "0"]),
    (["--each-line", "-", "-b", "-3"], ["-b", "-3"]),
    (["--each-line", "-", "--bundle-wait", "x"], ["--bundle-wait", "'x'"]),
    (["--each-line", "-", "-w", "5q"], ["'5q'"]),
    (["--bundle-size", "2", "--", "true"], ["--bundle-size needs --each-line -"]),
    (["--array", "1-3", "--bundle-wait", "1s", "--", "true"], ["--bundle-wait needs"]),
    (["--each-line", "tasks.txt", "-b", "2"], ["--bundle-size needs --each-line -"]),
    (["--failures", "/no/such/dir/f.txt", "--", "true"], ["--failures", "/no/such/dir"]),
])
def test_bad_stream_options_give_one_clear_line(tmp_path, args, needles):
    (tmp_path / "tasks.txt").write_text("echo a\n")
    p = hq("submit", *args, server_dir=tmp_path / "sd", check=False, cwd=tmp_path, input="")
    one_clear_line(p, *needles, code=2)


# ------------------------------------------------------------------ streaming


def test_a_line_runs_before_stdin_is_closed(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    out = tmp_path / "out"
    out.mkdir()
    feed = Feeder(cluster, "--each-line", "-", "--bundle-wait", "1s", "--stdout", "none",
                  "--", "sh", "-c", f'touch "{out}/$HPCQUEUE_ENTRY"')
    feed.line("first")
    wait_for((out / "first").exists, timeout=30, what="the first line's task")
    assert feed.proc.poll() is None  # still reading stdin
    info = job(cluster)
    assert info["open"] is True and info["tasks"] == 1 and info["ended"] is None
    assert "+open" in cluster.hq("job", "list").stdout
    feed.line("second")
    wait_for((out / "second").exists, timeout=30, what="the second line's task")
    assert feed.proc.poll() is None and not job(cluster)["ended"]
    code, stdout, stderr = feed.close()
    assert code == 0, stderr
    assert "job 1 closed: 2 task(s)" in stdout
    assert "2 finished" in cluster.hq("job", "wait", "1", timeout=30).stdout
    info = job(cluster)
    assert info["open"] is False and info["state"] == "finished"


def test_bundle_size_sends_lines_in_pairs(cluster):
    cluster.start_server()  # no worker: the tasks only pile up
    feed = Feeder(cluster, "--each-line", "-", "--bundle-size", "2", "--bundle-wait", "1h",
                  "--", "true")
    wait_for(lambda: tasks(cluster) == 0, what="the open job")
    for k, expect in ((1, 0), (2, 2), (3, 2), (4, 4), (5, 4)):
        feed.line(f"line {k}")
        if expect == k:
            wait_for(lambda n=expect: tasks(cluster) == n, what=f"{expect} tasks")
        else:
            time.sleep(1.0)  # an odd line waits for its pair (or for EOF)
            assert tasks(cluster) == expect
    code, stdout, stderr = feed.close()
    assert code == 0, stderr
    assert "job 1 closed: 5 task(s)" in stdout  # the last, alone, at EOF
    rows = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    assert [t["id"] for t in rows] == [0, 1, 2, 3, 4]
    info = job(cluster)
    assert info["tasks"] == 5 and info["waiting"] == 5 and not info["open"]


def test_bundle_wait_sends_a_lone_line(cluster):
    cluster.start_server()
    feed = Feeder(cluster, "--each-line", "-", "--bundle-wait", "0.3s", "--", "true")
    feed.line("alone")
    wait_for(lambda: tasks(cluster) == 1, timeout=10, what="the lone line")
    feed.line("# a comment is a task when there is a command")
    feed.line("   ")  # a blank line is not
    wait_for(lambda: tasks(cluster) == 2, timeout=10, what="the second line")
    assert feed.close()[0] == 0


def test_shell_lines_skip_comments_and_a_pipe_streams_by_default(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    p = cluster.hq("submit", "--each-line", "-", "--stdout", "none", "--wait",
                   input=f"# nothing\necho a > {tmp_path}/a\n\necho b > {tmp_path}/b\n",
                   timeout=60)
    assert "open" in p.stdout and "job 1 closed: 2 task(s)" in p.stdout
    assert "2 finished" in p.stdout
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


def test_a_regular_file_on_stdin_is_submitted_at_once(cluster, tmp_path):
    cluster.start_server()
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("echo a\necho b\n")
    with open(tasks) as f:
        p = subprocess.run([sys.executable, "-m", "hpcqueue", "submit", "--each-line", "-"],
                           stdin=f, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir)))
    assert p.returncode == 0 and "job 1 submitted: 2 task(s)" in p.stdout
    assert job(cluster)["open"] is False


@pytest.mark.parametrize("bad,why", [(b"a\0b", "holds a NUL character"),
                                     (b"caf\xe9", "is not UTF-8 text")])
def test_a_line_that_cannot_be_a_task_closes_the_job_with_the_lines_before(cluster, bad, why):
    cluster.start_server()
    p = subprocess.run([sys.executable, "-m", "hpcqueue", "submit", "--each-line", "-",
                        "-b", "1", "--", "true"], input=b"ok 1\nok 2\n" + bad + b"\nnot sent\n",
                       capture_output=True, timeout=60,
                       env=dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir)))
    one_clear_line(subprocess.CompletedProcess([], p.returncode, "", p.stderr.decode()),
                   f"line 3 of stdin {why}", "job 1 was closed with the 2 task(s)", code=2)
    info = job(cluster)
    assert info["tasks"] == 2 and info["open"] is False


def test_a_client_that_dies_leaves_the_job_open_and_job_close_ends_it(cluster):
    cluster.start_server()
    cluster.start_worker()
    feed = Feeder(cluster, "--each-line", "-", "--bundle-wait", "0.2s", "--stdout", "none",
                  "--", "true")
    feed.line("a")
    wait_for(lambda: tasks(cluster) and job(cluster)["finished"] == 1, timeout=30,
             what="the first task")
    os.killpg(feed.proc.pid, signal.SIGKILL)
    feed.proc.wait()
    time.sleep(0.5)
    info = job(cluster)
    assert info["open"] is True and info["ended"] is None and info["state"] == "running"
    waiter = subprocess.Popen([sys.executable, "-m", "hpcqueue", "job", "wait", "1"],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir)))
    try:
        time.sleep(1.0)
        assert waiter.poll() is None  # an open job is not done, though nothing waits
        assert "job 1 closed: 1 task(s)" in cluster.hq("job", "close", "1").stdout
        assert waiter.wait(timeout=30) == 0
        assert "1 finished" in waiter.stdout.read()
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
        waiter.stdout.close()
    assert "not open: nothing to close" in cluster.hq("job", "close", "1").stdout
    assert job(cluster)["state"] == "finished"


def test_cancel_closes_an_open_job_and_the_feeder_stops(cluster):
    cluster.start_server()
    feed = Feeder(cluster, "--each-line", "-", "--bundle-wait", "0.2s", "--", "true")
    feed.line("a")
    wait_for(lambda: tasks(cluster) == 1, what="the first task")
    assert "canceled job(s) 1" in cluster.hq("job", "cancel", "1").stdout
    info = job(cluster)
    assert info["open"] is False and info["state"] == "canceled"
    feed.line("b")  # refused now: the feeder says so, and stops
    code, _, stderr = feed.close()
    one_clear_line(subprocess.CompletedProcess([], code, "", stderr), "job 1 takes no more "
                   "tasks: it was canceled", code=1)


def test_an_open_job_survives_a_server_restart(cluster, tmp_path):
    journal = tmp_path / "journal.bin"
    cluster.start_server("--journal", journal)
    feed = Feeder(cluster, "--each-line", "-", "--bundle-wait", "0.2s", "--stdout", "none",
                  "--", "true")
    feed.line("before")
    wait_for(lambda: tasks(cluster) == 1, what="the first task")
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=30)
    feed.line("lost")  # its append finds no server: the feeder says the job stays open
    code, _, stderr = feed.close()
    one_clear_line(subprocess.CompletedProcess([], code, "", stderr), "lost the server",
                   "job 1 stays open", "hpcqueue job close 1", code=1)
    cluster.start_server("--journal", journal)
    info = job(cluster)
    assert info["open"] is True and info["tasks"] == 1 and info["ended"] is None
    # still appendable: as the feeder would have, had it connected again
    from hpcqueue.access import connect
    from hpcqueue.cli.common import check_reply

    conn = connect(cluster.server_dir)
    try:
        conn.send({"op": "append", "job": 1, "entries": ["after"]})
        assert check_reply(conn.recv())["tasks"] == 2
    finally:
        conn.close()
    cluster.hq("journal", "compact")  # and through a snapshot: open, with both entries
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=30)
    cluster.start_server("--journal", journal)
    info = job(cluster)
    assert info["open"] is True and info["tasks"] == 2
    rows = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    assert [t["id"] for t in rows] == [0, 1]
    assert json.loads(cluster.hq("task", "info", "1", "1", "--output", "json").stdout)[
        "entry"] == "after"
    cluster.start_worker()
    assert "job 1 closed: 2 task(s)" in cluster.hq("job", "close", "1").stdout
    assert "2 finished" in cluster.hq("job", "wait", "1", timeout=30).stdout


# ------------------------------------------------------------------ failures


FAIL_ODD = ["--", "sh", "-c", "test $((HPCQUEUE_ENTRY % 2)) -eq 0"]


def test_failures_file_lists_exactly_the_failing_lines(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    failures = tmp_path / "failed.txt"
    # a retried failure is not final: each failing line is written once, when it fails for good
    p = cluster.hq("submit", "--each-line", "-", "-b", "3", "-w", "0.2s", "--max-retries", "1",
                   "--stdout", "none", "--stderr", "none", "--failures", failures, *FAIL_ODD,
                   input="".join(f"{k}\n" for k in range(1, 11)), check=False, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "5 failed" in p.stdout
    assert sorted(failures.read_text().splitlines(), key=int) == ["1", "3", "5", "7", "9"]


def test_failures_are_written_as_they_fail(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    failures = tmp_path / "failed.txt"
    feed = Feeder(cluster, "--each-line", "-", "-w", "0.2s", "--stdout", "none", "--stderr",
                  "none", "--failures", failures, *FAIL_ODD)
    feed.line("7")
    wait_for(lambda: failures.exists() and failures.read_text() == "7\n", timeout=30,
             what="the failure, while stdin is open")
    assert feed.proc.poll() is None
    feed.line("8")
    feed.line("9")
    code, stdout, stderr = feed.close()
    assert code == 1, stderr
    assert failures.read_text().splitlines() == ["7", "9"]
    assert "job 1 failed: 3 tasks, 1 finished, 2 failed" in stdout


def test_print_failures_for_an_array_and_json(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    p = cluster.hq("submit", "--array", "1-6", "--print-failures", "--stdout", "none",
                   "--", "sh", "-c", "test $HPCQUEUE_TASK_ID -gt 2", check=False, timeout=60)
    assert p.returncode == 1
    # stdout holds the failures only: the command with each task id, to run again
    assert sorted(p.stdout.splitlines()) == [
        "HPCQUEUE_TASK_ID=1 sh -c 'test $HPCQUEUE_TASK_ID -gt 2'",
        "HPCQUEUE_TASK_ID=2 sh -c 'test $HPCQUEUE_TASK_ID -gt 2'"]
    assert "job 1 submitted" in p.stderr and "2 failed" in p.stderr
    (tmp_path / "x.json").write_text(json.dumps([{"n": 1}, {"n": 2}, {"n": 3}]))
    p = cluster.hq("submit", "--from-json", "x.json", "--print-failures", "--stdout", "none",
                   "--", "sh", "-c", 'test "$HPCQUEUE_ENTRY" = \'{"n": 2}\'', cwd=tmp_path,
                   check=False, timeout=60)
    assert p.returncode == 1
    assert sorted(p.stdout.splitlines()) == ['{"n": 1}', '{"n": 3}']


def test_all_tasks_pass_exit_0_and_an_empty_failures_file(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    failures = tmp_path / "failed.txt"
    p = cluster.hq("submit", "--array", "1-3", "--failures", failures, "--stdout", "none",
                   "--", "true", timeout=60)
    assert "3 finished" in p.stdout and failures.read_text() == ""


def test_a_failure_watcher_that_goes_away_leaves_the_server_serving(cluster, tmp_path):
    cluster.start_server()
    feed = Feeder(cluster, "--each-line", "-", "-w", "0.2s", "--stdout", "none", "--stderr",
                  "none", "--failures", tmp_path / "f.txt", *FAIL_ODD)
    feed.line("1")
    wait_for(lambda: tasks(cluster) == 1, what="the first task")
    os.killpg(feed.proc.pid, signal.SIGKILL)
    feed.proc.wait()
    cluster.start_worker()  # the task fails now, with nobody to tell
    wait_for(lambda: job(cluster)["failed"] == 1, timeout=30, what="the failure")
    cluster.hq("job", "close", "1")
    p = cluster.hq("job", "wait", "1", check=False, timeout=30)
    assert p.returncode == 1 and "1 failed" in p.stdout
    assert "Traceback" not in cluster.log("server.log")


def test_a_failure_watcher_first_hears_of_the_failures_so_far(cluster):
    from hpcqueue.access import connect

    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    cluster.hq("submit", "--array", "1-5", "--stdout", "none", "--", "sh", "-c",
               "test $HPCQUEUE_TASK_ID -ne 2 && test $HPCQUEUE_TASK_ID -ne 4")
    assert cluster.hq("job", "wait", "1", check=False, timeout=30).returncode == 1
    conn = connect(cluster.server_dir)
    try:
        conn.send({"op": "wait", "jobs": [1], "failures": True})
        pushed = conn.recv()
        final = conn.recv()
    finally:
        conn.close()
    assert [(r["id"], r["entry"], r["exit_code"]) for r in pushed["failed"]] == [
        (2, None, 1), (4, None, 1)]
    assert final["ok"] and final["jobs"][0]["failed"] == 2
