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


# ------------------------------------------------------------------ a round's limit


def workers(n, cpus=2):
    out = []
    for wid in range(1, n + 1):
        w = worker(cpus)
        w.id = wid
        out.append(w)
    return out


@pytest.mark.parametrize("policy", sorted(dispatch.POLICIES))
def test_a_round_hands_out_at_most_its_limit_and_the_next_goes_on(policy):
    plan = dispatch.POLICIES[policy]
    j = job(100)
    ws = workers(4)
    first = plan([j], ws, 0.0, 5)
    assert sum(len(p[1]) for _, p in first) == 5
    for w, p in first:  # as the start events would
        w.used_cpus += len(p[1])
    rest = plan([j], ws, 0.0, 5)
    assert sum(len(p[1]) for _, p in rest) == 3  # the 8 slots, and no more
    handed = [i for _, p in first + rest for i in p[1]]
    assert sorted(handed) == list(range(8))
    assert plan([job(100)], workers(4), 0.0) == plan([job(100)], workers(4), 0.0, None)


# ------------------------------------------------------------------ the server's rounds


class Session:
    def seal(self, message):
        return message


class Writer:
    def __init__(self):
        self.sent = []

    def write(self, message):
        self.sent.append(message)


def spec(n, **kw):
    s = {"name": "t", "kind": "array", "cmd": ["true"], "shell": False, "ids": [[1, n, 1]],
         "entries": None, "cpus": 1, "res": {}, "priority": 0, "max_retries": 0,
         "crash_limit": 5, "time_limit": None, "time_request": None, "stdout": "none",
         "stderr": "none", "cwd": None, "env": {}, "submit_dir": "/tmp"}
    s.update(kw)
    return s


class Server:
    """A Core with workers whose connections are lists, and a policy that notes whom each
    round looked at."""

    def __init__(self, n_workers, cpus=2):
        import asyncio

        from hpcqueue.server.core import Core, Peer
        from hpcqueue.state import ServerState

        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.core = core = Core(ServerState())
        self.looked_at = []
        real = core._plan

        def spy(jobs, ws, now, limit=None):
            self.looked_at.append(sorted(w.id for w in ws))
            return real(jobs, ws, now, limit)

        core._plan = spy
        for wid in range(1, n_workers + 1):
            core.record({"e": "worker", "id": wid, "info": {"cpus": cpus}, "t": 0.0})
            core.live[wid] = Peer(None, Writer(), Session(), None)

    def rounds(self):
        """Run the dispatch rounds scheduled, until none is."""
        while self.core._dispatch_scheduled:
            self.core._dispatch()

    def tasks(self, wid):
        """(job, index) of the tasks sent to worker WID so far."""
        return [(t[0], t[1]) for m in self.core.live[wid].writer.sent if m.get("op") == "tasks"
                for t in m["tasks"]]

    def report(self, wid, code=0):
        rows = [[j, i, 0, code, 1.0, 2.0, None]
                for j, i in sorted(self.core.state.workers[wid].tasks)]
        self.core.record({"e": "done", "w": wid, "r": rows, "t": 3.0})

    def close(self):
        self.loop.close()


def test_a_big_round_yields_and_fills_every_slot_in_later_rounds(monkeypatch):
    from hpcqueue.server import core as core_module

    monkeypatch.setattr(core_module, "ROUND_TASKS", 3)
    s = Server(4, cpus=2)
    try:
        s.core.submit(spec(100))
        s.core._dispatch()
        assert sum(len(s.tasks(w)) for w in range(1, 5)) == 3
        assert s.core._dispatch_scheduled  # the rest at the loop's next turn
        s.rounds()
        assert [len(s.tasks(w)) for w in range(1, 5)] == [2, 2, 2, 2]
    finally:
        s.close()


def test_a_round_looks_only_at_the_workers_that_reported():
    s = Server(10, cpus=1)
    try:
        s.core.submit(spec(100))
        s.rounds()
        assert s.looked_at[-1] == list(range(1, 11))  # new work: every worker
        assert all(len(s.tasks(w)) == 1 for w in range(1, 11))
        s.report(3)
        s.report(7)
        s.rounds()
        assert s.looked_at[-1] == [3, 7]
        assert len(s.tasks(3)) == 2 and len(s.tasks(7)) == 2 and len(s.tasks(5)) == 1
    finally:
        s.close()


def test_new_work_reaches_a_worker_that_was_left_idle():
    s = Server(2, cpus=1)
    try:
        s.core.submit(spec(1))
        s.rounds()
        busy = 1 if s.tasks(1) else 2
        idle = 3 - busy
        assert s.tasks(idle) == []
        s.report(busy)  # only the busy worker reported: the idle one was not looked at
        s.rounds()
        s.core.submit(spec(2))  # new work: the idle worker is looked at again
        s.rounds()
        assert [j for j, _ in s.tasks(idle)] == [2]
    finally:
        s.close()


def test_a_job_released_by_its_dependency_reaches_an_idle_worker():
    s = Server(2, cpus=1)
    try:
        s.core.submit(spec(1))
        s.core.submit(spec(2, after=[1]))  # waits for job 1: not ready
        s.rounds()
        busy = 1 if s.tasks(1) else 2
        idle = 3 - busy
        assert s.tasks(idle) == []
        s.report(busy)  # job 1 ends: job 2 is ready, and both workers have room
        s.rounds()
        assert [j for j, _ in s.tasks(idle)] == [2]
        assert [j for j, _ in s.tasks(busy)] == [1, 2]
    finally:
        s.close()
