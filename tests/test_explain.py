"""Why a waiting task does not run: the pure decision (hpcqueue.server.explain), then
`task explain` and `job info` against a real server and worker."""

from __future__ import annotations

import json

from conftest import wait_for

from hpcqueue.autoalloc.policy import Limits
from hpcqueue.jobs import Job
from hpcqueue.server.explain import explain_job, explain_task, started_counts
from hpcqueue.state import WorkerRecord

NOW = 1_000_000.0


def job(job_id=1, n=4, **spec) -> Job:
    return Job(job_id, {"ids": [[0, n - 1, 1]], **spec}, NOW)


def worker(wid=1, cpus=4, res=None, deadline=None, used=0) -> WorkerRecord:
    return WorkerRecord(wid, {}, NOW, cpus=cpus, res=res or {}, deadline=deadline,
                        used_cpus=used)


def test_no_worker_has_the_cpus():
    j = job(cpus=64)
    why = explain_task(j, 0, [worker(1, cpus=4), worker(2, cpus=8)], [], [j], NOW)
    assert why.reason == "cpus"
    assert "64 cpus" in why.message and "2 worker(s)" in why.message
    assert any("worker 2 has 8 cpus" in d for d in why.details)


def test_no_worker_has_the_resource():
    j = job(res={"gpus": 2})
    why = explain_task(j, 0, [worker(res={"gpus": 1})], [], [j], NOW)
    assert why.reason == "resource" and "gpus=2" in why.message
    assert "worker 1 has gpus=1" in why.details[0]


def test_no_worker_has_the_time_left():
    j = job(time_request=3600)
    why = explain_task(j, 0, [worker(deadline=NOW + 600)], [], [j], NOW)
    assert why.reason == "time-left" and "--time-request" in why.message
    assert "10m" in why.details[0] or "600" in why.details[0]


def test_no_worker_connected():
    j = job()
    assert explain_task(j, 0, [], [], [j], NOW).reason == "no-worker"


def test_retry_delay_names_when():
    j = job()
    j.start(0, 1, NOW)
    j.max_retries, j.retry_delay = 3, (60.0, 60.0)
    assert j.finish(0, 1, NOW, NOW + 1, "boom", t=NOW + 1)
    why = explain_task(j, 0, [worker()], [], [j], NOW + 1)
    assert why.reason == "retry-delay" and why.until == NOW + 61
    assert "1m" in why.message or "60" in why.message


def test_no_queue_can_serve_it():
    j = job(cpus=64)
    queues = [("small", Limits(time_limit=3600, cpus=8))]
    why = explain_task(j, 0, [worker()], queues, [j], NOW)
    assert why.reason == "no-queue"
    assert any("queue small" in d and "64 cpus" in d for d in why.details)
    # a queue that can serve it: the task waits for an allocation
    why = explain_task(j, 0, [worker()], queues + [("big", Limits(time_limit=3600, cpus=128))],
                       [j], NOW)
    assert why.reason == "allocation" and "big" in why.message


def test_behind_older_and_higher_priority_jobs():
    older, urgent, mine = job(1, n=5), job(2, n=3, priority=10), job(3, n=2)
    ready = [urgent, older, mine]  # dispatch order: priority, then age
    why = explain_task(mine, 1, [worker(used=4)], [], ready, NOW)
    assert why.reason == "behind" and why.ahead == 8 and "2 job(s)" in why.message
    # the oldest job of the highest priority is behind no one: its workers are busy
    why = explain_task(urgent, 0, [worker(used=4)], [], ready, NOW)
    assert why.reason == "busy"
    why = explain_task(urgent, 0, [worker(used=1)], [], ready, NOW)
    assert why.reason == "dispatching"


def test_not_waiting_and_job_level():
    j = job()
    j.start(0, 1, NOW)
    assert explain_task(j, 0, [worker()], [], [j], NOW).reason is None
    assert explain_job(job(cpus=64), [worker()], [], [], NOW).reason == "cpus"
    done = job(n=1)
    done.start(0, 1, NOW)
    done.finish(0, 0, NOW, NOW + 1, None)
    assert explain_job(done, [worker()], [], [], NOW) is None


def test_started_counts_prefetched_tasks_are_assigned():
    short, long_ = job(1, n=100), job(2, n=10)
    short.mean_runtime, long_.mean_runtime = 0.01, 60.0
    for i in range(12):
        short.start(i, 1, NOW)
    w = worker(cpus=4, used=12)  # 12 tasks of 1 cpu held by a worker of 4 cpus
    assert started_counts([short], [w]) == {1: 8}
    assert started_counts([short], [worker(cpus=16, used=12)]) == {}
    long_.start(0, 2, NOW)
    assert started_counts([short, long_], [w, worker(2, cpus=1, used=1)]) == {1: 8}


# ------------------------------------------------------------------ against a server

def explain(cluster, j, t=1) -> dict:
    return json.loads(cluster.hq("task", "explain", j, t, "--output", "json").stdout)


def test_task_explain_each_reason(cluster):
    cluster.start_server()
    cluster.start_worker("--cpus", "1", "--time-limit", "10m")
    wait_for(cluster.workers, what="a worker")
    hq = cluster.hq
    hq("submit", "--stdout", "none", "--cpus", "64", "--", "true")  # 1
    hq("submit", "--stdout", "none", "--resource", "gpus=1", "--", "true")  # 2
    hq("submit", "--stdout", "none", "--time-request", "1h", "--", "true")  # 3
    hq("submit", "--stdout", "none", "--max-retries", "2", "--retry-delay", "1h", "--",
       "false")  # 4
    hq("submit", "--stdout", "none", "--array", "1-3", "--", "sleep", "60")  # 5
    hq("submit", "--stdout", "none", "--", "true")  # 6

    assert explain(cluster, 1, 0)["reason"] == "cpus"
    assert explain(cluster, 2, 0)["reason"] == "resource"
    assert explain(cluster, 3, 0)["reason"] == "time-left"
    wait_for(lambda: explain(cluster, 4, 0)["reason"] == "retry-delay", what="a retry delay")
    assert explain(cluster, 4, 0)["until"] is not None
    wait_for(lambda: explain(cluster, 5, 1)["state"] == "running", what="job 5 to run")
    why = explain(cluster, 6, 0)
    assert why["reason"] == "behind" and why["ahead"] == 2, why
    assert explain(cluster, 5, 2)["reason"] == "busy"
    p = hq("task", "explain", "1", "0")
    assert "waiting because (cpus)" in p.stdout and "64 cpus" in p.stdout
    assert "is running" in hq("task", "explain", "5", "1").stdout

    # job info says why job 1 waits, and the server warned of it once, at submit
    assert "waiting because" in hq("job", "info", "1").stdout
    assert "waiting because" not in hq("job", "info", "6").stdout
    warned = [ln for ln in cluster.log("server.log").splitlines()
              if "WARNING" in ln and "job 1 cannot run" in ln]
    assert len(warned) == 1, cluster.log("server.log")
    assert "job 6 cannot run" not in cluster.log("server.log")

    # with an allocation queue whose workers are too small: no queue can serve it
    hq("alloc", "add", "local", "--name", "small", "--time-limit", "10m", "--cpus", "2",
       "--no-dry-run")
    why = explain(cluster, 1, 0)
    assert why["reason"] == "no-queue" and any("queue small" in d for d in why["details"])
    hq("job", "cancel", "all")


def test_task_explain_unknown_task_is_a_clear_error(cluster):
    cluster.start_server()
    cluster.hq("submit", "--stdout", "none", "--", "true")
    p = cluster.hq("task", "explain", "1", "99", check=False)
    assert p.returncode != 0 and "no task 99" in p.stderr and "Traceback" not in p.stderr
