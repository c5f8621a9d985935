"""Retries with delays and a timeout, against a real server and worker: the delays between
starts, a restart in the middle of a delay, the timeout, cancel, and the CLI's checks."""

import json
import os
import signal
import time

from conftest import hq, wait_for

FAIL = "date +%s.%N >> {log}; exit 3"  # each start appends its time, then fails


def starts(path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def task(cluster, job="1", index="0") -> dict:
    return json.loads(cluster.hq("task", "info", job, index, "--output", "json").stdout)


def submit_failing(cluster, log, *options):
    cluster.hq("submit", *options, "--stdout", "none", "--stderr", "none", "--",
               "sh", "-c", FAIL.format(log=log))


def test_delays_start_at_min_and_double_up_to_max(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "1")
    log = tmp_path / "starts"
    submit_failing(cluster, log, "--retry-delay", "1s:4s", "--max-retries", "3")
    p = cluster.hq("job", "wait", "1", check=False, timeout=90)
    assert p.returncode == 1, p.stdout + p.stderr
    t = starts(log)
    assert len(t) == 4, t
    gaps = [b - a for a, b in zip(t, t[1:])]
    # 1 s, 2 s, then 4 s (2 s doubled is 4 s; a next one would stay at 4 s, the MAX)
    for gap, delay in zip(gaps, (1.0, 2.0, 4.0)):
        assert delay <= gap < delay + 3.0, gaps  # the server wakes at the time, not later
    info = task(cluster)
    assert info["state"] == "failed" and info["retries"] == 3 and info["instance"] == 3


def test_a_delayed_task_waits_counted_as_waiting_and_can_be_canceled(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "1")
    log = tmp_path / "starts"
    submit_failing(cluster, log, "--retry-delay", "60s", "--max-retries", "1")
    wait_for(lambda: "retry_at" in task(cluster), what="the task delayed")
    info = task(cluster)
    assert info["state"] == "waiting" and info["retry_at"] > time.time() + 50
    job = json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
    assert job["waiting"] == 1 and job["running"] == 0 and job["state"] == "waiting"
    server = json.loads(cluster.hq("server", "info", "--output", "json").stdout)
    assert server["waiting"] == 0 and server["delayed"] == 1, server  # none may run now
    time.sleep(1.0)
    assert len(starts(log)) == 1  # the worker is idle, and the task is not handed out
    cluster.hq("job", "cancel", "1")
    p = cluster.hq("job", "wait", "1", check=False, timeout=20)
    assert p.returncode == 1 and "1 canceled" in p.stdout, p.stdout
    assert task(cluster)["state"] == "canceled" and len(starts(log)) == 1


def test_a_restart_in_the_middle_of_a_delay_keeps_it(cluster, tmp_path):
    journal = tmp_path / "journal"
    cluster.start_server("--journal", journal)
    cluster.start_worker("--cpus", "1")
    log = tmp_path / "starts"
    submit_failing(cluster, log, "--retry-delay", "8s", "--max-retries", "1")
    wait_for(lambda: "retry_at" in task(cluster), what="the task delayed")
    first, retry_at = starts(log)[0], task(cluster)["retry_at"]
    os.killpg(cluster.server.pid, signal.SIGKILL)  # no goodbye: the journal is all it has
    cluster.server.wait()
    cluster.start_server("--journal", journal)
    restarted = time.time()
    cluster.start_worker("--cpus", "1", name="worker2.log")  # the first one left with it
    assert restarted < retry_at - 2, "the restart took too long to test anything"
    info = task(cluster)
    assert info["state"] == "waiting" and info["retry_at"] == retry_at
    p = cluster.hq("job", "wait", "1", check=False, timeout=60)
    assert p.returncode == 1
    t = starts(log)
    assert len(t) == 2 and t[1] >= retry_at - 0.05 and t[1] - first >= 8.0, (t, retry_at)


def test_retry_timeout_stops_retries(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "1")
    log = tmp_path / "starts"
    submit_failing(cluster, log, "--retry-delay", "1s", "--retry-timeout", "2.5s",
                   "--max-retries", "50")
    p = cluster.hq("job", "wait", "1", check=False, timeout=60)
    assert p.returncode == 1
    # failures at about 0 s, 1 s and 2 s are retried; the one at about 3 s is not
    assert 3 <= len(starts(log)) <= 4, starts(log)
    info = task(cluster)
    assert info["state"] == "failed" and "retry timeout" in info["error"]
    assert info["retries"] == len(starts(log)) - 1


def test_bad_retry_options_get_one_line_each(tmp_path):
    for args, says in [
        (["--retry-delay", "4s:1s", "--max-retries", "2"], "MAX is less than MIN"),
        (["--retry-delay", "0s", "--max-retries", "2"], "more than 0"),
        (["--retry-delay", "1s:2s:3s", "--max-retries", "2"], "MIN:MAX"),
        (["--retry-delay", "1s"], "needs --max-retries"),
        (["--retry-timeout", "1m"], "needs --max-retries"),
        (["--retry-timeout", "0", "--max-retries", "2"], "more than 0"),
        (["--retry-timeout", "soon", "--max-retries", "2"], "invalid duration"),
    ]:
        p = hq("submit", *args, "--", "true", server_dir=tmp_path / "none", check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert says in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
