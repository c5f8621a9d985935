"""The local scheduler: allocations are worker processes on this machine."""

import json
import re

from conftest import wait_for


def test_local_queue_runs_tasks_and_scales_down(cluster):
    cluster.start_server()
    p = cluster.hq("alloc", "add", "local", "--time-limit", "10m", "--idle-timeout", "2s",
                   "--backlog", "1", "--max-worker-count", "2", "--workers-per-alloc", "2")
    assert "allocation queue 1 added" in p.stdout
    cluster.hq("submit", "--array", "1-20", "--stdout", "none", "--", "true")
    assert "20 finished" in cluster.hq("job", "wait", "1-1000000", timeout=60).stdout
    # a worker of a local allocation (no batch job) is shown with its allocation
    workers = cluster.hq("worker", "list", "--all").stdout
    assert "alloc 1.1" in workers, workers
    info = cluster.hq("alloc", "info", "1").stdout
    assert "transport" in info and "cpus per worker" in info, info

    def ended():
        info = json.loads(cluster.hq("alloc", "info", "1", "--output", "json").stdout)
        return [a for a in info["allocations"] if a["state"] != "queued" and a["ended"]]

    done = wait_for(ended, timeout=30, what="the local allocation to end")
    assert done[0]["state"] == "finished" and done[0]["workers"] == 2
    assert len(json.loads(cluster.hq("alloc", "info", "1", "--output", "json").stdout)
               ["allocations"]) == 1
    assert "idle for 2s" in cluster.hq("alloc", "log", "1.1", "stderr").stdout


def test_local_queue_pause_resume_remove(cluster):
    cluster.start_server()
    cluster.hq("alloc", "add", "local", "--time-limit", "10m", "--name", "here")
    cluster.hq("alloc", "pause", "here")
    cluster.hq("submit", "--stdout", "none", "--", "true")
    q = json.loads(cluster.hq("alloc", "list", "--output", "json").stdout)[0]
    assert q["state"] == "paused" and q["pause_reason"] == "paused by `alloc pause`"
    assert "paused" in cluster.hq("alloc", "explain", "here").stdout
    cluster.hq("alloc", "resume", "here")
    assert "1 finished" in cluster.hq("job", "wait", "1-1000000", timeout=60).stdout
    assert "removed" in cluster.hq("alloc", "remove", "here", "--force").stdout
    wait_for(lambda: json.loads(cluster.hq("alloc", "list", "--output", "json").stdout) == [],
             timeout=30, what="the removed queue to drain")
    p = cluster.hq("alloc", "info", "nosuch", check=False)
    assert p.returncode == 1 and "no allocation queue nosuch" in p.stderr
    # a removed queue can be looked at, and changing it says it was removed
    assert "removed" in cluster.hq("alloc", "info", "here").stdout
    p = cluster.hq("alloc", "remove", "here", check=False)
    assert p.returncode == 1 and "allocation queue here was removed" in p.stderr, p.stderr


def test_target_drain_sizes_by_throughput(cluster):
    """200 tasks of 0.2 s to run within 10 s on 1-cpu workers: about 4 workers (40 s of
    work), not one per task (200) and not a single one."""
    cluster.start_server()
    cluster.hq("alloc", "add", "local", "--time-limit", "10m", "--idle-timeout", "3s",
               "--backlog", "20", "--cpus", "1", "--target-drain", "10s")
    cluster.hq("submit", "--array", "1-200", "--stdout", "none", "--", "sleep", "0.2")
    assert "200 finished" in cluster.hq("job", "wait", "1", timeout=180).stdout
    workers = json.loads(cluster.hq("worker", "list", "--all", "--output", "json").stdout)
    assert 3 <= len(workers) <= 6, [w["alloc"] for w in workers]
    assert all(w["cpus"] == 1 for w in workers)
    ran = [w["finished"] for w in workers]
    assert sum(ran) == 200 and sum(n > 0 for n in ran) >= 3, ran
    decisions = json.loads(cluster.hq("alloc", "explain", "1", "--output", "json").stdout)
    reasons = [d["reason"] for d in decisions["decisions"]
               if d["reason"] != "no waiting tasks"]
    # the first decision had no run time (1 worker to measure), then the arithmetic
    assert "no run time yet" in reasons[0] and "submit 1 allocation(s)" in reasons[0]
    sized = [r for r in reasons if "(observed) ÷ 10s = " in r and "submit" in r]
    assert sized, reasons
    # (0.2s, or 0.21s: a duration is shown to two digits, without a trailing zero)
    assert re.search(r"\d+ task\(s\) × 0\.2\d?s \(observed\) ÷ 10s = [3-6]", sized[0]), sized[0]
