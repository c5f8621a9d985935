"""The server's core: state, journal, live workers, waiters and dispatch.

Everything that changes state goes through :meth:`Core.record`: the event is
appended to the journal, applied to the state, and its effects (waking waiters,
killing canceled tasks, a new dispatch round) are scheduled.  Messages leave
only through :meth:`Core.send`, which first hands buffered journal events to
the kernel, so nothing is acknowledged before it is journaled.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hpcqueue.jobs import Job
from hpcqueue.model import WorkerState
from hpcqueue.server import dispatch
from hpcqueue.state import ServerState

log = logging.getLogger("hpcqueue.server")
#: events after which the autoalloc loop looks again at once
#: events after which a dispatch round may find something to do (not "start": it only
#: takes room, and the round that recorded it already filled what it could)
_FREES_OR_ADDS_WORK = frozenset({"job", "worker", "wgone", "done", "back", "cancel"})
_WAKES_AUTOALLOC = frozenset({"job", "worker", "wgone", "back", "aq_add", "aq_resume"})


class Peer:
    """One authenticated connection."""

    __slots__ = ("reader", "writer", "session", "addr", "worker_id", "sent_jobs", "last_seen")

    def __init__(self, reader, writer, session, addr):
        self.reader = reader
        self.writer = writer
        self.session = session
        self.addr = addr
        self.worker_id: int | None = None
        self.sent_jobs: set[int] = set()
        self.last_seen = time.monotonic()


class Waiter:
    """A client waiting for jobs to end (`job wait`, `submit --wait`)."""

    def __init__(self, job_ids: set[int]):
        self.pending = set(job_ids)
        self.event = asyncio.Event()


class Core:
    def __init__(self, state: ServerState, journal=None):
        self.state = state
        self.journal = journal
        self.live: dict[int, Peer] = {}  # worker id -> connection
        self.waiters: list[Waiter] = []
        self._dispatch_scheduled = False
        self.loop = asyncio.get_event_loop()
        self.autoalloc = None  # the AutoAlloc service, once the server runs
        self.info: dict = {}

    # ------------------------------------------------------------- events

    def record(self, event: dict) -> None:
        if self.journal is not None:
            self.journal.append(event)
        self.state.apply(event)
        state = self.state
        if state.just_done:
            done, state.just_done = state.just_done, []
            self._jobs_done(done)
        if state.to_kill:
            kills, state.to_kill = state.to_kill, []
            self._kill(kills)
        if state.ready and event["e"] in _FREES_OR_ADDS_WORK:
            self.schedule_dispatch()
        if self.autoalloc is not None and event["e"] in _WAKES_AUTOALLOC:
            self.autoalloc.poke()

    def send(self, peer: Peer, message) -> None:
        if self.journal is not None and self.journal.dirty:
            self.journal.flush()
        peer.writer.write(peer.session.seal(message))

    # ------------------------------------------------------------- jobs

    def submit(self, spec: dict) -> Job:
        job_id = self.state.next_job_id
        self.record({"e": "job", "id": job_id, "spec": spec, "t": time.time()})
        job = self.state.jobs[job_id]
        log.info("job %d submitted: %d tasks", job_id, job.n)
        return job

    def cancel(self, job_ids: list[int]) -> None:
        self.record({"e": "cancel", "ids": list(job_ids), "t": time.time()})

    def _jobs_done(self, jobs: list[Job]) -> None:
        ids = {j.id for j in jobs}
        for w in self.waiters:
            if w.pending & ids:
                w.pending -= ids
                if not w.pending:
                    w.event.set()

    def add_waiter(self, job_ids: set[int]) -> Waiter:
        pending = {j for j in job_ids if j in self.state.jobs and not self.state.jobs[j].done}
        w = Waiter(pending)
        if not pending:
            w.event.set()
        else:
            self.waiters.append(w)
        return w

    def remove_waiter(self, w: Waiter) -> None:
        if w in self.waiters:
            self.waiters.remove(w)

    # ------------------------------------------------------------- workers

    def _kill(self, kills) -> None:
        by_worker: dict[int, list] = {}
        for wid, job_id, i in kills:
            by_worker.setdefault(wid, []).append([job_id, i])
        for wid, tasks in by_worker.items():
            peer = self.live.get(wid)
            if peer is not None:
                self.send(peer, {"op": "kill", "tasks": tasks})

    def worker_gone(self, wid: int, reason: str, crash: bool) -> None:
        self.live.pop(wid, None)
        w = self.state.workers.get(wid)
        if w is not None and w.state is WorkerState.RUNNING:
            log.info("worker %d %s: %s", wid, "lost" if crash else "stopped", reason)
            self.record({"e": "wgone", "id": wid, "reason": reason, "crash": crash,
                         "t": time.time()})

    # ------------------------------------------------------------- dispatch

    def schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self.live:
            self._dispatch_scheduled = True
            self.loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        state = self.state
        workers = [state.workers[wid] for wid in self.live]
        now = time.time()
        for w, picked in dispatch.plan(state.ready_jobs(), workers, now):
            self.record({"e": "start", "w": w.id, "tasks": picked, "t": now})
            self._send_tasks(self.live[w.id], picked)

    def _send_tasks(self, peer: Peer, picked: list) -> None:
        jobs = self.state.jobs
        defs = {}
        out = []
        for k in range(0, len(picked), 2):
            job = jobs[picked[k]]
            jid = job.id
            if jid not in peer.sent_jobs:
                peer.sent_jobs.add(jid)
                defs[jid] = job_def(job)
            ids, entries, starts = job.ids, job.entries, job.starts
            for i in picked[k + 1]:
                out.append((jid, i, ids.id_at(i), starts[i] - 1,
                            entries[i] if entries is not None else None))
        self.send(peer, {"op": "tasks", "jobs": defs, "tasks": out})


def job_def(job: Job) -> dict:
    """What a worker needs to know of a job to run its tasks."""
    spec = job.spec
    return {k: spec.get(k) for k in (
        "cmd", "shell", "env", "cwd", "stdout", "stderr", "time_limit", "cpus", "res",
        "submit_dir", "time_request",
    )}
