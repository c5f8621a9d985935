"""The dispatch decision: what fits which worker."""

import pytest

from hpcqueue.jobs import Job
from hpcqueue.server import dispatch
from hpcqueue.state import WorkerRecord


def job(n=100, **kw):
    spec = {"cmd": ["true"], "ids": [[0, n - 1, 1]], "cpus": 1}
    spec.update(kw)
    return Job(1, spec, 0.0)


def worker(cpus=4, res=None, deadline=None):
    w = WorkerRecord(id=1, info={}, connected=0.0, cpus=cpus, res=res or {}, deadline=deadline)
    w.used_res = {k: 0 for k in w.res}
    return w


def test_fills_capacity_without_prefetch_for_unknown_runtimes():
    (w, picked), = dispatch.plan([job()], [worker(4)], 0.0)
    assert picked == [1, [0, 1, 2, 3]]


def test_short_tasks_are_prefetched_long_ones_not():
    short = job()
    short.mean_runtime = 0.01  # ten per cpu make 0.1 s of queued work
    assert dispatch.room_for(short, worker(4)) == 4 * (1 + 10)
    tiny = job()
    tiny.mean_runtime = 0.0
    assert dispatch.room_for(tiny, worker(4)) == 4 * (1 + dispatch.PREFETCH_MAX)
    medium = job()
    medium.mean_runtime = 0.3
    assert dispatch.room_for(medium, worker(4)) == 8
    long_ = job()
    long_.mean_runtime = 60.0
    assert dispatch.room_for(long_, worker(4)) == 4


def test_cpus_and_resources_must_fit():
    assert not dispatch.fits_worker(job(cpus=8), worker(4), 0.0)
    assert not dispatch.fits_worker(job(res={"gpus": 1}), worker(4), 0.0)
    gpu = job(res={"gpus": 1}, cpus=1)
    w = worker(8, {"gpus": 2})
    assert dispatch.fits_worker(gpu, w, 0.0)
    (_, picked), = dispatch.plan([gpu], [w], 0.0)
    assert picked == [1, [0, 1]]  # two gpus, not eight cpus, limit it


def test_time_request_must_fit_the_time_left():
    j = job(time_request=3600)
    assert not dispatch.fits_worker(j, worker(deadline=1800.0), 0.0)
    assert dispatch.fits_worker(j, worker(deadline=7200.0), 0.0)
    assert dispatch.fits_worker(j, worker(deadline=None), 0.0)
    assert dispatch.plan([j], [worker(deadline=1800.0)], 0.0) == []


def test_round_spreads_over_idle_workers_and_respects_batch_limit():
    j = job(n=10)
    a, b = worker(2), worker(2)
    b.id = 2
    plans = dispatch.plan([j], [a, b], 0.0)
    assert sorted(len(p[1][1]) for p in plans) == [2, 2]
    assert a.used_cpus == 0 and b.used_cpus == 0  # counters are the start event's job


def test_tasks_taken_for_a_start_that_cannot_be_journaled_wait_again():
    from hpcqueue.jobs import Job

    job = Job(1, {"cmd": ["true"], "ids": [[0, 9, 1]]}, 0.0)
    first = job.take(4)
    second = job.take(3)
    job.untake(second)
    job.untake(first)
    assert job.cursor == 0 and not job.requeued
    assert job.take(10) == list(range(10))


# ------------------------------------------------------------------ round-robin


def workers_(*cpus, finished=()):
    out = []
    for n, c in enumerate(cpus):
        w = worker(c)
        w.id = n + 1
        w.finished = finished[n] if n < len(finished) else 0
        out.append(w)
    return out


def counts(plan):
    return {w.id: sum(len(p[k]) for k in range(1, len(p), 2)) for w, p in plan}


def test_round_robin_fills_free_slots_only_and_never_prefetches():
    j = job(n=100)
    j.mean_runtime = 0.001  # first-free would prefetch 64 a cpu
    plan = dispatch.plan_round_robin([j], workers_(2, 1, 3), 0.0)
    assert counts(plan) == {1: 2, 2: 1, 3: 3}
    assert sorted(i for _, p in plan for i in p[1]) == list(range(6))


def test_few_tasks_go_one_to_each_worker_not_all_to_the_biggest():
    ws = workers_(4, 1, 1)
    assert counts(dispatch.plan([job(n=3)], ws, 0.0)) == {1: 3}  # first-free fills worker 1
    assert counts(dispatch.plan_round_robin([job(n=3)], ws, 0.0)) == {1: 1, 2: 1, 3: 1}


def test_round_robin_gives_the_next_task_to_the_worker_that_had_fewest():
    ws = workers_(4, 4, 4, finished=(10, 3, 5))
    plan = dispatch.plan_round_robin([job(n=4)], ws, 0.0)
    # worker 2 (3 so far) gets tasks until it has had 5, as many as worker 3; the tie goes to
    # the lower id, then worker 3 has had fewer; worker 1 (10) gets none
    assert counts(plan) == {2: 3, 3: 1}
    assert [w.id for w, _ in plan] == [2, 3]  # in the order they got their first task
    running = workers_(1, 1)
    running[0].tasks = {(9, 0)}
    running[0].used_cpus = 1  # busy: no room, not in this round
    assert counts(dispatch.plan_round_robin([job(n=5)], running, 0.0)) == {2: 1}


def test_round_robin_over_many_rounds_is_even():
    from hpcqueue.jobs import Job

    j = Job(1, {"cmd": ["true"], "ids": [[0, 29, 1]]}, 0.0)
    ws = workers_(1, 1, 1)
    total = {1: 0, 2: 0, 3: 0}
    rounds = 0
    while (j.available or j.running) and rounds < 200:
        for w, picked in dispatch.plan_round_robin([j], ws, 0.0):
            for i in picked[1]:
                j.start(i, w.id, 0.0)
                w.tasks.add((1, i))
                w.used_cpus += 1
                total[w.id] += 1
        w = ws[rounds % 3]  # results come in turn: one worker's a round
        if w.tasks:
            j.finish(w.tasks.pop()[1], 0, 0.0, 0.0, None)
            w.used_cpus -= 1
            w.finished += 1
        rounds += 1
    assert total == {1: 10, 2: 10, 3: 10}


def test_round_robin_respects_fit_priority_and_resources():
    from hpcqueue.jobs import Job

    gpu = Job(1, {"cmd": ["x"], "ids": [[0, 9, 1]], "res": {"gpus": 1}, "priority": 5}, 0.0)
    cpu = Job(2, {"cmd": ["x"], "ids": [[0, 9, 1]]}, 0.0)
    a = worker(4, {"gpus": 1})
    b = worker(2)
    b.id = 2
    plan = dispatch.plan_round_robin([gpu, cpu], [a, b], 0.0)
    by_worker = {w.id: p for w, p in plan}
    # one at a time, turn about: a's one gpu goes to job 1, the rest of its cpus to job 2
    assert by_worker[1] == [1, [0], 2, [1, 3, 4]]
    assert by_worker[2] == [2, [0, 2]]
    assert a.used_cpus == 0 and a.used_res == {"gpus": 0} and b.used_cpus == 0


def test_neither_policy_hands_out_a_delayed_retry():
    from hpcqueue.jobs import Job

    for policy in dispatch.POLICIES.values():
        j = Job(1, {"cmd": ["x"], "ids": [[0, 1, 1]], "max_retries": 1,
                    "retry_delay": [5.0, 5.0]}, 0.0)
        j.start(0, 1, 0.0)
        j.start(1, 1, 0.0)
        j.finish(0, 1, 0.0, 1.0, "exit code 1", t=1.0)
        assert j.waiting == 1 and j.available == 0
        assert policy([j], [worker(4)], 2.0) == []


@pytest.mark.parametrize("policy", sorted(dispatch.POLICIES))
def test_a_task_queued_twice_by_replay_goes_out_once(policy):
    from hpcqueue.jobs import Job

    j = Job(1, {"cmd": ["x"], "ids": [[0, 2, 1]]}, 0.0)
    j.start(0, 1, 0.0)
    j.put_back(0, crashed=False)
    j.start(0, 1, 0.0)  # replay: 0 stays in the queue, and goes back again below
    j.put_back(0, crashed=False)
    assert list(j.requeued) == [0, 0]
    plan = dispatch.POLICIES[policy]([j], workers_(1, 1), 0.0)
    handed = sorted(i for _, p in plan for i in p[1])
    assert handed == sorted(set(handed)) and 0 in handed  # once, to one worker


def test_policies_are_the_server_options():
    assert set(dispatch.POLICIES) == {"first-free", "round-robin"}


# ------------------------------------------------------------------ against the real server


def test_round_robin_spreads_short_tasks_evenly_over_workers(cluster):
    import json
    from collections import Counter

    from conftest import wait_for

    cluster.start_server("--dispatch", "round-robin")
    for n in range(3):
        cluster.start_worker("--cpus", "1", name=f"worker{n}.log")
    wait_for(lambda: len(cluster.workers()) == 3, what="three workers")
    cluster.hq("submit", "--array", "1-30", "--stdout", "none", "--stderr", "none", "--",
               "sleep", "0.05")
    assert "30 finished" in cluster.hq("job", "wait", "1", timeout=120).stdout
    tasks = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    per_worker = Counter(t["worker"] for t in tasks)
    assert len(per_worker) == 3 and all(8 <= k <= 12 for k in per_worker.values()), per_worker
