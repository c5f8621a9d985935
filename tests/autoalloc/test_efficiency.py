"""`alloc efficiency`: what an allocation's workers ran, summed as results come in, and the
figures made of it; the sums replay from the journal and survive a snapshot."""

import pytest

from hpcqueue.autoalloc.efficiency import allocation_figures, queue_figures
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.journal import snapshot
from hpcqueue.state import ServerState, restore

PARAMS = QueueParams(scheduler="slurm", time_limit=3600.0, cpus=None).to_dict()


class Recorder:
    def __init__(self):
        self.state = ServerState()
        self.events = []

    def __call__(self, **ev):
        ev.setdefault("t", 1000.0)
        self.events.append(ev)
        self.state.apply(ev)
        return self.state


def run_allocation(rec, done_rows=((0, 1010.0, 1070.0), (1, 1070.0, 1100.0))):
    """Queue 1 with allocation 1.1 (2 workers of 4 cpus), a job of 2-cpu tasks, results."""
    rec(e="aq_add", id=1, params=PARAMS, t=900.0)
    rec(e="alloc_new", queue=1, id="1.1", job_id="77", dir="/x", workers=2, t=950.0)
    rec(e="alloc_state", id="1.1", state="running", reason=None, fault=False, t=1000.0)
    rec(e="worker", id=1, info={"cpus": 4, "alloc": "1.1"}, t=1005.0)
    rec(e="worker", id=2, info={"cpus": 4, "alloc": "1.1"}, t=1006.0)
    rec(e="worker", id=3, info={"cpus": 8}, t=1006.0)  # not of an allocation
    rec(e="job", id=1, spec={"cmd": ["true"], "ids": [[0, 3, 1]], "cpus": 2}, t=1008.0)
    rec(e="start", w=1, tasks=[1, [0, 1]], t=1010.0)
    rec(e="start", w=3, tasks=[1, [2]], t=1010.0)
    rec(e="done", w=1, r=[[1, i, 0, 0, t0, t1, None] for i, t0, t1 in done_rows], t=1100.0)
    rec(e="done", w=3, r=[[1, 2, 0, 0, 1010.0, 1500.0, None]], t=1500.0)
    return rec(e="alloc_state", id="1.1", state="finished", reason="completed", fault=False,
               t=1200.0)


def test_tasks_of_an_allocations_workers_add_up_there():
    st = run_allocation(Recorder())
    a = st.alloc.by_id["1.1"]
    assert a.worker_cpus == 4 and a.expected == 2
    assert a.used == pytest.approx((60 + 30) * 2)  # 2-cpu tasks; worker 3's is not its
    assert (a.first_task, a.last_task) == (1010.0, 1100.0)


def test_stale_and_foreign_results_add_nothing():
    rec = Recorder()
    run_allocation(rec)
    st = rec(e="done", w=1, r=[[1, 0, 0, 0, 1010.0, 1900.0, None]], t=1900.0)  # again
    assert st.alloc.by_id["1.1"].used == pytest.approx(180)


def test_figures_of_an_allocation_and_its_queue():
    st = run_allocation(Recorder())
    a = st.alloc.by_id["1.1"]
    f = allocation_figures(a, None, now=5000.0)
    assert f["cpus"] == 8 and f["wall_seconds"] == 200.0
    assert f["core_hours_allocated"] == pytest.approx(200 * 8 / 3600)
    assert f["core_hours_used"] == pytest.approx(180 / 3600)
    assert f["fraction_used"] == pytest.approx(180 / 1600)
    assert (f["idle_before"], f["idle_after"]) == (10.0, 100.0)
    q = queue_figures(st.alloc.queues[1], now=5000.0)
    assert q["fraction_used"] == pytest.approx(180 / 1600) and q["unknown_cpus"] == 0
    assert q["allocations"] == [f]


def test_a_running_allocation_counts_up_to_now_and_one_without_tasks_is_all_idle():
    rec = Recorder()
    rec(e="aq_add", id=1, params=PARAMS, t=900.0)
    rec(e="alloc_new", queue=1, id="1.1", job_id="77", dir="/x", workers=1, t=950.0)
    st = rec(e="worker", id=1, info={"cpus": 2, "alloc": "1.1"}, t=1000.0)
    f = allocation_figures(st.alloc.by_id["1.1"], None, now=1100.0)
    assert f["wall_seconds"] == 100.0 and f["idle_before"] == 100.0 and f["idle_after"] == 0
    assert f["fraction_used"] == 0.0 and f["ended"] is None


def test_cpus_unknown_without_workers_unless_the_queue_says():
    rec = Recorder()
    rec(e="aq_add", id=1, params=PARAMS, t=900.0)
    rec(e="alloc_new", queue=1, id="1.1", job_id="77", dir="/x", workers=3, t=950.0)
    st = rec(e="alloc_state", id="1.1", state="failed", reason="x", fault=True, t=1000.0)
    a = st.alloc.by_id["1.1"]
    assert allocation_figures(a, None, 2000.0)["core_hours_allocated"] is None
    assert queue_figures(st.alloc.queues[1], 2000.0)["unknown_cpus"] == 1
    assert allocation_figures(a, 4, 2000.0)["cpus"] == 12
    # never started: nothing allocated, nothing idle
    assert allocation_figures(a, 4, 2000.0)["core_hours_allocated"] == 0
    assert allocation_figures(a, 4, 2000.0)["fraction_used"] is None


def test_the_schedulers_own_start_and_end_replace_the_polls():
    rec = Recorder()
    run_allocation(rec)  # started at 1000 (a poll), ended at 1200 (a poll)
    rec2 = Recorder()
    for ev in rec.events[:-1]:
        rec2(**ev)
    st = rec2(e="alloc_state", id="1.1", state="finished", reason="completed", fault=False,
              t=1200.0, started=998.0, ended=1150.0)
    a = st.alloc.by_id["1.1"]
    assert (a.started, a.ended) == (998.0, 1150.0)
    assert allocation_figures(a, None, 5000.0)["idle_after"] == 50.0
    assert (restore(rec2.events).alloc.by_id["1.1"].started, a.ended) == (998.0, 1150.0)


def accumulated(st):
    return {a.id: (a.worker_cpus, a.used, a.first_task, a.last_task)
            for a in st.alloc.by_id.values()}


def test_replay_and_snapshot_arrive_at_the_same_sums():
    rec = Recorder()
    st = run_allocation(rec)
    want = accumulated(st)
    assert want["1.1"][1] > 0
    assert accumulated(restore(rec.events)) == want
    assert accumulated(restore(snapshot.dump(st))) == want
    # a snapshot written before these figures existed loads with nothing counted
    events = snapshot.dump(st)
    for d in events[0]["alloc"]["allocs"]:
        for k in ("worker_cpus", "used", "first_task", "last_task"):
            del d[k]
    assert accumulated(restore(events)) == {"1.1": (0, 0.0, None, None)}
