"""Snapshots: a state dumped and loaded back is the same state, for many replayed histories.

Histories are made by a small simulated server (`History`): it turns a list of abstract
steps (submit, connect, dispatch, results, cancel, a worker lost, allocation queue events,
...) into the events a live server would journal, using `dispatch.plan` to hand out tasks.
The property: replaying a history, and replaying the snapshot of that replay (through
msgpack, as a journal holds it), give equal states; and the events after the snapshot
change both alike.
"""

from __future__ import annotations

import dataclasses
import random
import time
from array import array
from collections import deque
from enum import Enum

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcqueue.autoalloc.book import AllocBook, Allocation, AllocQueue
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.exceptions import JournalError
from hpcqueue.jobs import Job
from hpcqueue.journal import snapshot
from hpcqueue.model import IdRanges
from hpcqueue.server import dispatch
from hpcqueue.state import ServerState, WorkerRecord, restore


def journaled(events: list[dict]) -> list[dict]:
    """EVENTS as they come back out of a journal: packed, then unpacked."""
    pack = msgpack.Packer(use_bin_type=True).pack
    unpacker = msgpack.Unpacker(raw=False)  # strict map keys: events need no others
    unpacker.feed(b"".join(pack(ev) for ev in events))
    return list(unpacker)


def snapshot_of(state: ServerState, chunk_tasks: int = snapshot.CHUNK_TASKS) -> list[dict]:
    return journaled(snapshot.dump(state, chunk_tasks))


# ------------------------------------------------------------------ comparing states


def value(x):
    """X as plain, comparable values that keep its types (a tuple stays a tuple, 1 != 1.0,
    an array keeps its type code) and its order (dicts compare item by item)."""
    if isinstance(x, Enum):
        return (type(x).__name__, x.value)
    if x is None or isinstance(x, (bool, int, float, str, bytes)):
        return (type(x).__name__, x)
    if isinstance(x, array):
        return ("array", x.typecode, x.tobytes())
    if isinstance(x, bytearray):
        return ("bytearray", bytes(x))
    if isinstance(x, deque):
        return ("deque", x.maxlen, [value(v) for v in x])
    if isinstance(x, (set, frozenset)):
        return (type(x).__name__, sorted(value(v) for v in x))
    if isinstance(x, dict):
        return ("dict", [(value(k), value(v)) for k, v in x.items()])
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [value(v) for v in x])
    if isinstance(x, Job):
        return ("Job", x.id)  # a reference to a job (just_done): its id
    return (type(x).__name__, [(name, value(getattr(x, name, "<unset>")))
                               for name in attributes(x)])


def attributes(obj) -> list[str]:
    """Every attribute of a record: dataclass fields, slots or instance dict."""
    if dataclasses.is_dataclass(obj):
        return [f.name for f in dataclasses.fields(obj)]
    if hasattr(type(obj), "__slots__"):
        return list(type(obj).__slots__)
    return list(vars(obj))


#: attributes compared apart (derived indexes) or not at all (caches, bound methods, and
#: `ready_added`: a count the core reads to notice new work, not state a replay rebuilds)
STATE_APART = {"jobs", "workers", "ready", "alloc", "_ready_order", "_handlers", "delayed",
               "after", "ready_added"}
QUEUE_APART = {"allocations", "decisions"}  # decisions: not journaled
BOOK_APART = {"queues", "by_id"}


def comparable(state: ServerState, loose: bool = False) -> dict:
    """STATE as {what: plain value}, every attribute of every record in it included.  LOOSE:
    the order of a job's retries and errors does not count (see the xfail test below)."""
    out = {}
    for name in attributes(state):
        if name not in STATE_APART:
            out[f"state.{name}"] = value(getattr(state, name))
    out["jobs (order)"] = list(state.jobs)
    for jid, job in state.jobs.items():
        for name in attributes(job):
            out[f"job {jid}.{name}"] = value(getattr(job, name, "<unset>"))
        if loose:
            out[f"job {jid}.requeued"] = sorted(job.requeued)
            out[f"job {jid}.errors"] = sorted(job.errors.items())
    out["workers (order)"] = list(state.workers)
    for wid, w in state.workers.items():
        for name in attributes(w):
            out[f"worker {wid}.{name}"] = value(getattr(w, name))
    out["ready"] = sorted(state.ready)
    # the jobs waiting for each job (a job canceled while it waited may linger in the live
    # lists: it is skipped there, and a snapshot leaves it out)
    out["after"] = {dep: ids for dep, waiting in sorted(state.after.items())
                    if (ids := [j.id for j in waiting if not j.done])}
    out["after are the jobs' waiting_on"] = sorted(
        (dep, j.id) for dep, waiting in state.after.items() for j in waiting
        if not j.done) == sorted((dep, j.id) for j in state.jobs.values()
                                 for dep in j.waiting_on)
    # the heap of delayed retries: its entries that still hold (a canceled job's stay in the
    # live heap until their time), and that they are every job's delayed retries
    valid = sorted(e for e in state.delayed if e[1] in state.jobs
                   and state.jobs[e[1]].retry_at.get(e[2]) == e[0])
    out["delayed"] = valid
    out["delayed are the jobs' retry_at"] = valid == sorted(
        (at, jid, i) for jid, job in state.jobs.items() for i, at in job.retry_at.items())
    out["ready are the jobs"] = all(state.ready[i] is state.jobs[i] for i in state.ready)
    out["ready_jobs() order"] = [j.id for j in state.ready_jobs()]
    book = state.alloc
    for name in attributes(book):
        if name not in BOOK_APART:
            out[f"alloc.{name}"] = value(getattr(book, name))
    out["queues (order)"] = list(book.queues)
    for qid, q in book.queues.items():
        for name in attributes(q):
            if name not in QUEUE_APART:
                out[f"queue {qid}.{name}"] = value(getattr(q, name))
        out[f"queue {qid} allocations (order)"] = list(q.allocations)
        out[f"queue {qid} allocations are by_id's"] = all(
            book.by_id.get(aid) is a for aid, a in q.allocations.items())
    out["by_id (order)"] = list(book.by_id)
    for aid, a in book.by_id.items():
        out[f"alloc {aid}"] = value(a)
    return out


def assert_same(a: ServerState, b: ServerState, loose: bool = False) -> None:
    pa, pb = comparable(a, loose), comparable(b, loose)
    diff = [k for k in {**pa, **pb} if pa.get(k, "<missing>") != pb.get(k, "<missing>")]
    assert not diff, "\n".join(f"{k}:\n  {pa.get(k, '<missing>')!r}\n  {pb.get(k, '<missing>')!r}"
                               for k in diff[:5])


def packed(events: list[dict]) -> bytes:
    pack = msgpack.Packer(use_bin_type=True).pack
    return b"".join(pack(ev) for ev in events)


# ------------------------------------------------------------------ histories


class History:
    """A simulated server: turns steps into the events a live server would journal."""

    def __init__(self) -> None:
        self.live = ServerState()
        self.events: list[dict] = []
        self.t = 1000.0

    def record(self, **ev) -> None:
        self.t += 0.37
        ev.setdefault("t", self.t)
        self.events.append(ev)
        self.live.apply(ev)
        self.live.just_done.clear()
        self.live.to_kill.clear()

    def running_workers(self) -> list[WorkerRecord]:
        return [w for w in self.live.workers.values() if w.state.value == "running"]

    def step(self, kind: str, a: int, b: int, c: int) -> None:
        getattr(self, "do_" + kind)(a, b, c)

    # -- jobs and tasks

    def do_submit(self, a, b, c):
        n = 1 + a % 25
        spec = {"name": f"job{a}", "kind": "array", "cmd": ["/bin/true"], "shell": False,
                "ids": [[1, n, 1]], "entries": None, "cpus": 1 + (b % 5 == 0),
                "res": {"gpus": 1} if b % 7 == 0 else {}, "priority": c % 4 - 1,
                "max_retries": c % 3, "crash_limit": 1 + c % 3, "time_limit": None,
                "retry_delay": [0.5, 2.0] if c % 4 == 1 else None,
                "retry_timeout": 1.5 if c % 5 == 2 else None,
                "time_request": None, "stdout": "none", "stderr": "none", "cwd": None,
                "env": {"A": "1"}, "submit_dir": "/home/u"}
        if b % 3 == 1:  # an array with a step and a second range
            m = 1 + b % 4
            spec["ids"] = [[0, 2 * (n - 1), 2], [1000, 1000 + m - 1, 1]]
        elif b % 3 == 2:  # --each-line
            spec.update(kind="lines", cmd=None, shell=True, ids=[[0, n - 1, 1]],
                        entries=[f"echo line {i}" for i in range(n)])
        self.record(e="job", id=self.live.next_job_id, spec=spec)

    def do_depend(self, a, b, c):
        """A job with dependencies: on up to two jobs (any end with C % 3 == 0), and tasks
        that wait for the one before them (every other task) or for the first two."""
        n = 2 + a % 6
        spec = {"name": f"dep{a}", "kind": "json", "cmd": ["/bin/true"], "shell": False,
                "ids": [[0, n - 1, 1]], "entries": [str(i) for i in range(n)], "cpus": 1,
                "res": {}, "priority": b % 3, "max_retries": c % 2, "crash_limit": 2,
                "time_limit": None, "time_request": None, "stdout": "none", "stderr": "none",
                "cwd": None, "env": {}, "submit_dir": "/home/u"}
        if b % 2 == 0:
            spec["task_deps"] = [[k, [k - 1] if k % 2 else [0, 1]] for k in range(2, n)] \
                or [[1, [0]]]
        ids = list(self.live.jobs)
        if ids and b % 4 != 2:
            spec["after"] = sorted({ids[a % len(ids)], ids[c % len(ids)]})
            if c % 3 == 0:
                spec["after_any"] = True
        self.record(e="job", id=self.live.next_job_id, spec=spec)

    def _open_jobs(self):
        return [j for j in self.live.jobs.values() if j.open]

    def do_open(self, a, b, c):
        """`submit --each-line -` from a pipe: an open job, with 0 to 3 entries so far."""
        n = a % 4
        spec = {"name": f"stream{a}", "kind": "lines", "cmd": None, "shell": True,
                "ids": [[0, n - 1, 1]] if n else [], "entries": [f"echo {i}" for i in range(n)],
                "cpus": 1, "res": {}, "priority": b % 4 - 1, "max_retries": c % 2,
                "crash_limit": 2, "time_limit": None, "time_request": None, "stdout": "none",
                "stderr": "none", "cwd": None, "env": {}, "submit_dir": "/home/u", "open": True}
        self.record(e="job", id=self.live.next_job_id, spec=spec)

    def do_append(self, a, b, c):
        jobs = self._open_jobs()
        if jobs:
            job = jobs[a % len(jobs)]
            self.record(e="append", id=job.id,
                        entries=[f"echo more {job.n + k}" for k in range(1 + b % 5)])

    def do_close(self, a, b, c):
        jobs = self._open_jobs()
        if jobs:
            self.record(e="close", id=jobs[a % len(jobs)].id)

    def do_connect(self, a, b, c):
        info = {"hostname": f"node{a % 5}", "pid": 4000 + a, "cpus": 1 + a % 4,
                "version": "0.1.0"}
        if b % 2:
            info["res"] = {"gpus": b % 3}
        live_allocs = [x for x in self.live.alloc.by_id.values() if x.live]
        if live_allocs and c % 2:
            info["alloc"] = live_allocs[c % len(live_allocs)].id
        if c % 5 == 0:
            info["deadline"] = self.t + 3600.0
        self.record(e="worker", id=self.live.next_worker_id, info=info)

    def do_dispatch(self, a, b, c):
        now = self.t + 0.1
        for w, picked in dispatch.plan(self.live.ready_jobs(), self.running_workers(), now):
            self.record(e="start", w=w.id, tasks=picked, t=now)

    def _worker_with_tasks(self, a):
        busy = [w for w in self.running_workers() if w.tasks]
        return busy[a % len(busy)] if busy else None

    def do_results(self, a, b, c):
        w = self._worker_with_tasks(a)
        if w is None:
            return
        rows = []
        for k, (jid, i) in enumerate(sorted(w.tasks)[:1 + b % 4]):
            job = self.live.jobs[jid]
            code = 0 if (c + k) % 3 else 1 + k % 2
            t0 = job.t0[i]
            rows.append([jid, i, job.instance(i), code, t0, t0 + 0.25 * (k + 1),
                         f"exit code {code}" if code else None])
        self.record(e="done", w=w.id, r=rows)

    def do_fail(self, a, b, c):
        """Results that all fail: retries (delayed ones too), or failures for good."""
        w = self._worker_with_tasks(a)
        if w is None:
            return
        rows = []
        for jid, i in sorted(w.tasks, key=lambda key: (-key[0], key[1]))[:1 + b % 4]:
            t0 = self.live.jobs[jid].t0[i]
            rows.append([jid, i, self.live.jobs[jid].instance(i), 1 + c % 2, t0, t0 + 0.1,
                         "exit code 1"])
        self.record(e="done", w=w.id, r=rows)

    def do_due(self, a, b, c):
        """The server's timer: delayed retries up to a moment from now go back to the queue."""
        self.record(e="due", t=self.t + (a % 5) * 0.5)

    def do_stale(self, a, b, c):
        """A result that must change nothing: a wrong instance, or the wrong worker."""
        started = [j for j in self.live.jobs.values() if j.state is not None]
        if not started or not self.live.workers:
            return
        job = started[a % len(started)]
        i = b % job.n
        wid = list(self.live.workers)[c % len(self.live.workers)]
        inst = job.instance(i) + (1 if c % 2 else 0)
        self.record(e="done", w=wid, r=[[job.id, i, inst, 0, 1.0, 2.0, None]])

    def do_back(self, a, b, c):
        w = self._worker_with_tasks(a)
        if w is None:
            return
        by_job: dict = {}
        for jid, i in sorted(w.tasks)[:1 + b % 3]:
            by_job.setdefault(jid, []).append(i)
        tasks = []
        for jid, idxs in by_job.items():
            tasks += (jid, idxs)
        self.record(e="back", w=w.id, tasks=tasks)

    def do_cancel(self, a, b, c):
        if self.live.jobs:
            ids = list(self.live.jobs)
            self.record(e="cancel", ids=[ids[a % len(ids)]] + ([ids[b % len(ids)]] if c % 2
                                                               else []))

    def do_forget(self, a, b, c):
        ended = [j for j, job in self.live.jobs.items() if job.done]
        if ended:
            self.record(e="forget", ids=sorted({ended[a % len(ended)], ended[b % len(ended)]}))

    def do_gone(self, a, b, c):
        workers = self.running_workers()
        if workers:
            crash = b % 2 == 0
            self.record(e="wgone", id=workers[a % len(workers)].id,
                        reason="connection lost" if crash else "stopped", crash=crash)

    def do_restart(self, a, b, c):
        self.record(e="server", v="0.1.0")

    def do_ids(self, a, b, c):
        self.record(e="ids", job=self.live.next_job_id + a % 3,
                    worker=self.live.next_worker_id + b % 3)

    def do_note(self, a, b, c):
        self.record(e="note", msg=f"note {a}")

    # -- allocation queues

    def _queue(self, a):
        queues = list(self.live.alloc.queues.values())
        return queues[a % len(queues)] if queues else None

    def do_aq_add(self, a, b, c):
        params = QueueParams(scheduler="slurm", time_limit=3600.0 + a, name=f"q{a}",
                             backlog=1 + b % 3, workers_per_alloc=1 + c % 2,
                             partition="short", extra_args=["--exclusive"], modules=["gcc"],
                             env={"OMP_NUM_THREADS": "1"}, pause_after=1 + a % 3,
                             server_address={"host": "login1", "port": 7000 + b})
        self.record(e="aq_add", id=self.live.alloc.next_queue_id, params=params.to_dict())

    def do_alloc_new(self, a, b, c):
        q = self._queue(a)
        if q is not None and q.state.value in ("active", "paused"):
            aid = f"{q.id}.{q.next_alloc}"
            self.record(e="alloc_new", queue=q.id, id=aid, job_id=str(9000 + len(
                self.live.alloc.by_id)), dir=f"/srv/allocs/{aid}", workers=1 + b % 2)

    def do_alloc_state(self, a, b, c):
        allocs = list(self.live.alloc.by_id.values())
        if allocs:
            state = ("running", "finished", "failed")[b % 3]
            self.record(e="alloc_state", id=allocs[a % len(allocs)].id, state=state,
                        reason="walltime" if state != "running" else None,
                        fault=state == "failed")

    def do_alloc_failed(self, a, b, c):
        q = self._queue(a)
        if q is not None:
            self.record(e="alloc_submit_failed", queue=q.id, error=f"sbatch: error {b}")

    def do_aq_pause(self, a, b, c):
        q = self._queue(a)
        if q is not None:
            self.record(e="aq_pause", id=q.id, reason="by hand" if b % 2 else None)

    def do_aq_resume(self, a, b, c):
        q = self._queue(a)
        if q is not None:
            self.record(e="aq_resume", id=q.id)

    def do_aq_edit(self, a, b, c):
        q = self._queue(a)
        if q is not None:
            self.record(e="aq_edit", id=q.id, changes={"backlog": 1 + b % 4,
                                                       "idle_timeout": 60.0 + c})

    def do_aq_remove(self, a, b, c):
        q = self._queue(a)
        if q is not None:
            self.record(e="aq_remove", id=q.id)


STEPS = sorted(name[3:] for name in vars(History) if name.startswith("do_"))
# what a server mostly does: hand out tasks and take results
WEIGHTED = STEPS + ["dispatch"] * 4 + ["results"] * 6 + ["submit", "connect", "gone"] + [
    "depend"] * 2


def history(steps) -> History:
    h = History()
    for step in steps:
        h.step(*step)
    return h


def steps_of(kinds) -> st.SearchStrategy:
    return st.tuples(st.sampled_from(kinds), st.integers(0, 1000), st.integers(0, 1000),
                     st.integers(0, 1000))


#: a history: some queues, jobs and workers first (so that most later steps do something),
#: then any steps
histories = st.tuples(
    st.lists(steps_of(["aq_add", "alloc_new"]), max_size=3),
    st.lists(steps_of(["submit"]), min_size=1, max_size=4),
    st.lists(steps_of(["connect"]), min_size=1, max_size=3),
    st.lists(steps_of(WEIGHTED), min_size=5, max_size=60),
).map(lambda parts: [step for part in parts for step in part])


def check_round_trip(events: list[dict], cut: int, chunk_tasks: int) -> None:
    """The property, for a history cut in two: snapshot after the first part."""
    events = journaled(events)
    before, after = events[:cut], events[cut:]
    replayed = restore(before)
    snap = snapshot_of(replayed, chunk_tasks)
    loaded = restore(snap)
    assert_same(replayed, loaded)
    # the same state dumps to the same bytes: order (errors, jobs, allocations) included
    assert packed(snapshot_of(loaded, chunk_tasks)) == packed(snap)
    for s in (replayed, loaded):
        s.just_failed = []  # as a live server collects them: the same failures either way
    for ev in after:
        replayed.apply(ev)
        loaded.apply(ev)
        # (just_done is in the order of a set of jobs: not state, and not the same order)
        assert sorted(j.id for j in loaded.just_done) == sorted(j.id for j in replayed.just_done)
        assert loaded.to_kill == replayed.to_kill
        assert sorted(loaded.just_failed) == sorted(replayed.just_failed)
        for s in (replayed, loaded):
            s.just_done.clear()
            s.to_kill.clear()
            s.just_failed.clear()
    assert_same(replayed, loaded)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=histories, cut=st.integers(0, 10_000),
       chunk_tasks=st.sampled_from([1, 3, 16, snapshot.CHUNK_TASKS]))
def test_snapshot_of_any_history_is_the_same_state(steps, cut, chunk_tasks):
    events = history(steps).events
    check_round_trip(events, cut % (len(events) + 1), chunk_tasks)


def random_steps(seed: int, n: int = 200) -> list:
    """A long history drawn from SEED: denser than hypothesis' draws, but not shrunk."""
    rnd = random.Random(seed)

    def step(kind):
        return (kind, rnd.randrange(1001), rnd.randrange(1001), rnd.randrange(1001))

    setup = [step("aq_add"), step("alloc_new"), step("submit"), step("submit"),
             step("connect"), step("connect")]
    return setup + [step(rnd.choice(WEIGHTED)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(40))
def test_snapshot_of_long_random_histories(seed):
    events = history(random_steps(seed)).events
    for k in range(6):
        check_round_trip(events, len(events) * k // 5, chunk_tasks=(3, 16, 1 << 24)[k % 3])


# a history that does a bit of everything, checked at every cut
RICH = [
    ("aq_add", 1, 2, 1), ("alloc_new", 0, 1, 0), ("alloc_new", 0, 0, 0), ("aq_edit", 0, 2, 5),
    ("submit", 24, 0, 2),     # 25 tasks, max_retries 2, crash_limit 3
    ("submit", 9, 1, 1),      # a stepped array with a second range
    ("submit", 6, 2, 0),      # --each-line
    ("submit", 3, 0, 1),      # never started: cancelled below
    ("connect", 3, 1, 1),     # 4 cpus, gpus, from an allocation
    ("connect", 1, 0, 0),
    ("dispatch", 0, 0, 0), ("results", 0, 3, 0), ("results", 1, 3, 1),
    ("open", 2, 3, 0),        # an open job of 2 entries (priority 2: it runs at once)
    ("dispatch", 0, 0, 0),
    ("append", 0, 4, 0),      # 5 more tasks for the open job: its columns grow
    ("back", 0, 1, 0), ("stale", 0, 3, 1),
    ("gone", 0, 0, 0),        # crash: its tasks are requeued with a crash
    ("connect", 2, 0, 1), ("dispatch", 0, 0, 0), ("results", 0, 3, 2),
    ("cancel", 3, 0, 0), ("alloc_state", 1, 2, 0), ("alloc_failed", 0, 1, 0),
    ("ids", 2, 2, 0), ("restart", 0, 0, 0), ("note", 0, 0, 0),
    ("connect", 0, 0, 1), ("dispatch", 0, 0, 0), ("results", 0, 1, 0),
    ("aq_pause", 0, 1, 0), ("aq_resume", 0, 0, 0), ("alloc_new", 0, 0, 0),
    ("alloc_state", 2, 0, 0), ("alloc_state", 2, 1, 0), ("aq_remove", 0, 0, 0), ("submit", 1, 0, 0),
    ("connect", 3, 0, 0), ("dispatch", 0, 0, 0),
    # retries delayed 0.5 s doubling to 2 s, not retried 1.5 s after the first failure
    ("submit", 4, 3, 17), ("connect", 2, 0, 0), ("dispatch", 0, 0, 0),
    ("fail", 3, 3, 0), ("due", 0, 0, 0), ("dispatch", 0, 0, 0),
    ("due", 1, 0, 0), ("dispatch", 0, 0, 0), ("fail", 3, 3, 0), ("fail", 4, 3, 0),
    ("due", 4, 0, 0), ("dispatch", 0, 0, 0), ("fail", 3, 3, 0), ("fail", 4, 3, 0),
    ("submit", 2, 3, 5), ("dispatch", 0, 0, 0), ("fail", 3, 3, 0), ("fail", 4, 3, 0),
    ("due", 4, 0, 0), ("dispatch", 0, 0, 0), ("fail", 3, 3, 0), ("fail", 4, 3, 0),
    ("fail", 5, 3, 0), ("cancel", 1, 0, 0), ("submit", 3, 3, 0), ("dispatch", 0, 0, 0),
    ("open", 0, 0, 0),        # open with no task yet: not done
    ("close", 0, 0, 0),       # the first open job takes no more
    ("append", 0, 1, 0),      # the second gets two tasks, and stays open
    ("dispatch", 0, 0, 0), ("results", 0, 3, 1),
    # dependencies: on jobs still running, on one that failed or was canceled, and tasks
    # that wait for tasks (some released by results, one canceled by a failure)
    ("depend", 0, 0, 1), ("depend", 3, 2, 4), ("depend", 5, 1, 3), ("depend", 4, 6, 4),
    ("dispatch", 0, 0, 0),
    ("results", 0, 3, 1), ("dispatch", 0, 0, 0), ("fail", 0, 3, 0), ("dispatch", 0, 0, 0),
]


def test_rich_history_covers_what_it_should():
    live = history(RICH).live
    jobs = list(live.jobs.values())
    assert any(j.errors for j in jobs) and any(j.requeued for j in jobs)
    assert any(j.state is None for j in jobs) and any(j.canceled for j in jobs)
    assert any(j.entries for j in jobs) and any(len(j.ids.ranges) > 1 for j in jobs)
    assert any(j.state is not None and max(j.crashes) for j in jobs)
    assert any(j.state is not None and max(j.retries) for j in jobs)
    assert any(w.state.value == "lost" for w in live.workers.values())
    assert any(w.tasks for w in live.workers.values()) and live.ready
    assert any(j.waiting_on for j in jobs) and any(j.unmet for j in jobs)
    assert any(j.reason for j in jobs) and any(
        j.dependants and "depends on failed" in str(j.errors) for j in jobs)
    assert any(a.workers for a in live.alloc.by_id.values())
    assert any(a.live_workers for a in live.alloc.by_id.values())
    assert {a.state.value for a in live.alloc.by_id.values()} >= {"running", "finished"}
    assert any(q.edits for q in live.alloc.queues.values())
    opened = [j for j in jobs if j.spec.get("open")]
    assert any(j.open for j in opened) and any(not j.open for j in opened)
    assert all(j.spec["ids"] == [[0, j.n - 1, 1]] and len(j.entries) == j.n for j in opened)
    assert all(j.ended is None for j in opened if j.open)
    # an append to a job whose columns were allocated: they grew in place
    started = set()
    for ev in history(RICH).events:
        if ev["e"] == "start":
            started.update(ev["tasks"][0::2])
        elif ev["e"] == "append":
            assert ev["id"] in started
            break
    else:
        raise AssertionError("RICH appends to no started job")
    # delayed retries: some still waiting for their time, some woken, some timed out, and a
    # canceled job's left in the heap
    assert any(j.retry_at for j in jobs) and any(j.failed_since for j in jobs)
    assert any("retry timeout" in msg for j in jobs for msg in j.errors.values())
    assert any(j.retry_delay and j.state is not None and max(j.starts) > 1 for j in jobs)
    assert any(live.jobs[jid].retry_at.get(i) != at for at, jid, i in live.delayed)


def test_a_forgotten_job_is_gone_after_replay_and_snapshot_and_its_id_is_not_reused():
    h = History()
    h.step("submit", 2, 0, 0)
    h.step("submit", 2, 0, 0)
    h.record(e="cancel", ids=[1])
    h.record(e="forget", ids=[1, 2])  # job 2 is not done: apply leaves it
    assert list(h.live.jobs) == [2] and h.live.next_job_id == 3
    replayed = restore(journaled(h.events))
    assert_same(h.live, replayed)
    loaded = restore(snapshot_of(replayed))
    assert_same(replayed, loaded)
    assert 1 not in loaded.jobs and loaded.next_job_id == 3


def test_a_lost_worker_requeues_in_the_same_order_after_a_snapshot():
    for done in range(1, 40):  # sets that grew to 48 tasks, then shrank
        h = History()
        h.record(e="job", id=1, spec={"cmd": ["true"], "ids": [[0, 63, 1]]})
        h.record(e="worker", id=1, info={"cpus": 48})
        h.record(e="start", w=1, tasks=[1, list(range(48))])
        h.record(e="done", w=1, r=[[1, i, 0, 0, 1.0, 2.0, None] for i in range(done)])
        replayed = restore(journaled(h.events))
        loaded = restore(snapshot_of(replayed))
        for s in (replayed, loaded):
            s.apply({"e": "wgone", "id": 1, "reason": "lost", "crash": True, "t": 3.0})
        assert list(loaded.jobs[1].requeued) == list(replayed.jobs[1].requeued)


@pytest.mark.parametrize("chunk_tasks", [2, snapshot.CHUNK_TASKS])
def test_rich_history_at_every_cut(chunk_tasks):
    events = history(RICH).events
    for cut in range(len(events) + 1):
        check_round_trip(events, cut, chunk_tasks)


# ------------------------------------------------------------------ the events themselves


def finished_array(n: int, batch: int = 500) -> ServerState:
    h = History()
    h.record(e="job", id=1, spec={"cmd": ["/bin/true"], "ids": [[1, n, 1]]})
    h.record(e="worker", id=1, info={"cpus": batch})
    for lo in range(0, n, batch):
        idxs = list(range(lo, min(n, lo + batch)))
        h.record(e="start", w=1, tasks=[1, idxs])
        h.record(e="done", w=1, r=[[1, i, 0, 0, h.t, h.t + 0.5, None] for i in idxs])
    return h.live


def test_a_finished_job_costs_29_bytes_a_task():
    n = 200_000
    state = finished_array(n)
    events = snapshot.dump(state)
    assert [ev["e"] for ev in events] == ["snapshot", "snapjob", "snapcols"]
    per_task = len(packed(events)) / n
    assert snapshot.BYTES_PER_TASK <= per_task < 29.1
    t0 = time.perf_counter()
    loaded = restore(journaled(events))
    took = time.perf_counter() - t0
    assert_same(state, loaded)
    assert took < 0.5  # a million tasks load in ~0.05 s: this is 5x less, with a margin


def test_columns_are_split_so_that_no_event_nears_1_gib():
    assert snapshot.CHUNK_TASKS * snapshot.BYTES_PER_TASK + 4096 < 1 << 30
    state = finished_array(1000, batch=100)
    events = snapshot.dump(state, chunk_tasks=300)
    cols = [ev for ev in events if ev["e"] == "snapcols"]
    assert [ev["lo"] for ev in cols] == [0, 300, 600, 900]
    assert events[0]["events"] == len(events) - 1 == 5 and events[0]["jobs"] == 1
    for ev in cols:
        k = min(300, 1000 - ev["lo"])
        assert len(packed([ev])) - k * snapshot.BYTES_PER_TASK < 64
    assert_same(state, restore(journaled(events)))


def test_columns_match_what_a_job_allocates():
    job = Job(1, {"ids": [[1, 3, 1]]}, 0.0)
    job.start(0, 1, 1.0)
    size = 0
    for name, code in snapshot.COLUMNS:
        column = getattr(job, name)
        assert (type(column), getattr(column, "typecode", None)) == (
            (bytearray, None) if code is None else (array, code))
        size += 1 if code is None else column.itemsize
    assert size == snapshot.BYTES_PER_TASK


def test_every_attribute_is_carried_or_derived():
    """A new attribute fails here until snapshot.py carries it (or it is derived)."""
    state = history(RICH).live
    snap = snapshot.dump(state)
    head, job_ev = snap[0], snap[1]
    from_spec = {"ids", "entries", "n", "cpus", "res", "priority", "time_request",
                 "crash_limit", "max_retries", "retry_delay", "retry_timeout",
                 "deps", "dependants"}  # the lists of task dependencies: from task_deps
    columns = {name for name, _ in snapshot.COLUMNS}
    assert set(Job.__slots__) == (set(job_ev) - {"e", "chunks"}) | from_spec | columns
    assert {f.name for f in dataclasses.fields(WorkerRecord)} == set(head["workers"][0])
    q = next(iter(state.alloc.queues.values()))
    assert set(vars(q)) == set(head["alloc"]["queues"][0]) | QUEUE_APART
    assert set(Allocation.__slots__) == set(head["alloc"]["allocs"][0])
    assert set(vars(AllocBook())) == BOOK_APART | {"next_queue_id"}
    assert set(vars(ServerState())) == STATE_APART | {
        "next_job_id", "next_worker_id", "just_done", "to_kill",
        "unique",  # derived: rebuilt from the specs of unfinished jobs
        "after",  # derived: rebuilt from the jobs' waiting_on
        "just_failed"}  # a per-apply output, like just_done


def test_a_snapshot_replaces_whatever_was_there():
    small = history([("submit", 2, 0, 0), ("connect", 1, 0, 0), ("dispatch", 0, 0, 0)])
    target = restore(journaled(history(RICH).events))
    book, handler = target.alloc, target._handlers["aq_add"]
    for ev in snapshot_of(small.live):
        target.apply(ev)
    assert_same(restore(journaled(small.events)), target)
    # the book is changed in place: the handlers bound to it reach the new queues
    assert target.alloc is book and target._handlers["aq_add"] == handler
    target.apply({"e": "aq_add", "id": 5, "params": QueueParams("pbs", 60.0).to_dict(),
                  "t": 1.0})
    assert list(target.alloc.queues) == [5] and isinstance(target.alloc.queues[5], AllocQueue)


def test_types_survive_the_journal():
    loaded = restore(snapshot_of(history(RICH).live))
    w = next(w for w in loaded.workers.values() if w.tasks)
    assert all(type(key) is tuple for key in w.tasks)
    assert all(type(r) is tuple for j in loaded.jobs.values() for r in j.ids.ranges)
    assert all(isinstance(j.ids, IdRanges) and type(j.requeued) is deque
               for j in loaded.jobs.values())
    a = next(iter(loaded.alloc.by_id.values()))
    assert type(a.workers) is set and type(a.live_workers) is set
    q = next(iter(loaded.alloc.queues.values()))
    assert isinstance(q.params, QueueParams) and q.decisions.maxlen == 30


def test_a_big_endian_host_reads_the_same_columns(monkeypatch):
    state = history(RICH).live
    little = snapshot.dump(state)
    monkeypatch.setattr(snapshot, "_SWAP", True)  # as a big-endian host: swap both ways
    swapped = snapshot.dump(state)
    cols = [ev["cols"] for ev in little if ev["e"] == "snapcols"]
    assert cols != [ev["cols"] for ev in swapped if ev["e"] == "snapcols"]
    assert_same(state, restore(journaled(swapped)))


def test_another_format_is_refused():
    snap = snapshot.dump(history(RICH).live)
    snap[0]["v"] = snapshot.FORMAT + 1
    with pytest.raises(JournalError, match="snapshot of format 2"):
        restore(snap)


@pytest.mark.parametrize("damage", ["missing chunk", "short column", "no job"])
def test_columns_that_do_not_follow_are_refused(damage):
    snap = snapshot.dump(finished_array(10, batch=5), chunk_tasks=4)
    if damage == "missing chunk":
        del snap[3]
    elif damage == "short column":
        snap[2]["cols"][4] = snap[2]["cols"][4][:-1]
    else:
        del snap[1]
    with pytest.raises(JournalError, match="snapshot"):
        restore(snap)
