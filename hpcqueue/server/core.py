"""The server's core: state, journal, live workers, waiters and dispatch.

Everything that changes state goes through :meth:`Core.record`: the event is
written to the journal (one frame, handed to the kernel), then applied to the
state, and its effects (waking waiters, killing canceled tasks, a new dispatch
round) are scheduled.  So the state never runs ahead of the journal, and
nothing is acknowledged before it is journaled.

When the journal cannot be written (disk full, I/O error), `record` raises
JournalUnavailable and changes nothing: a client's request is refused with
that error, dispatch pauses, and facts that cannot be refused (`_FACTS`: a
worker's results, tasks it handed back, a worker gone) wait in `held`, in
order, unapplied.  The main loop
retries once a second; the first write that succeeds carries the held events,
and the server goes on as before.

Delayed retries (``--retry-delay``) wait in the state's heap; one loop timer is
set for the earliest, and when it fires the server records a ``due`` event,
which puts the retries whose time has come back into the queue.  The times come
from the journal, so after a restart a delayed task still waits until its time.
"""

from __future__ import annotations

import asyncio
import logging
import time

from hpcqueue.calls import DEFAULT_RESULT_LIMIT
from hpcqueue.exceptions import JournalError, JournalUnavailable
from hpcqueue.jobs import Job
from hpcqueue.model import FAILED, WorkerState
from hpcqueue.server import dispatch
from hpcqueue.server.liveness import Liveness
from hpcqueue.state import ServerState

log = logging.getLogger("hpcqueue.server")
#: events after which the autoalloc loop looks again at once
#: events after which a dispatch round may find something to do (not "start": it only
#: takes room, and the round that recorded it already filled what it could)
_FREES_OR_ADDS_WORK = frozenset({"job", "worker", "wgone", "done", "back", "cancel", "due"})
#: events after which every worker may have room for a task it had no room for (new or
#: re-queued work); a job joining the ready set does the same (`ServerState.ready_added`)
_ADDS_WORK = frozenset({"job", "append", "wgone", "back", "due"})
#: tasks a dispatch round hands out at most: a bigger round yields to the loop (clients'
#: requests, results) and goes on at its next turn
ROUND_TASKS = 8192
_WAKES_AUTOALLOC = frozenset({"job", "worker", "wgone", "back", "due", "aq_add",
                              "aq_resume"})
DUE_RETRY = 1.0  # seconds before a `due` event that could not be journaled is tried again
#: events that report what has already happened elsewhere: they cannot be refused, so while
#: the journal is down they are held, to be recorded in order when it is back
_FACTS = frozenset({"done", "back", "wgone"})


class Peer:
    """One authenticated connection."""

    __slots__ = ("reader", "writer", "session", "addr", "worker_id", "sent_jobs")

    def __init__(self, reader, writer, session, addr):
        self.reader = reader
        self.writer = writer
        self.session = session
        self.addr = addr
        self.worker_id: int | None = None
        self.sent_jobs: set[int] = set()


class Waiter:
    """A client waiting for jobs to end (`job wait`, `submit --wait`)."""

    def __init__(self, job_ids: set[int]):
        self.pending = set(job_ids)
        self.event = asyncio.Event()


class Core:
    def __init__(self, state: ServerState, journal=None, dispatch_policy: str = "first-free"):
        if dispatch_policy not in dispatch.POLICIES:
            raise ValueError(f"unknown dispatch policy {dispatch_policy!r}: use one of "
                             f"{', '.join(dispatch.POLICIES)}")
        self.state = state
        self.journal = journal
        self.dispatch_policy = dispatch_policy
        self._plan = dispatch.POLICIES[dispatch_policy]
        self.live: dict[int, Peer] = {}  # worker id -> connection
        #: when each live worker was last heard from; the server sets its limit
        #: (heartbeat x misses + 2 s), this default is that of the default heartbeat
        self.liveness = Liveness(26.0)
        self.waiters: list[Waiter] = []
        self._dispatch_scheduled = False
        #: the workers the next dispatch round looks at: those that may have room (they
        #: reported, or are new), or all live workers when work was added; the others were
        #: full, or had no task they fit, at the last round that looked at them
        self._hungry: dict[int, None] = {}
        self._all_hungry = True
        self._ready_added = state.ready_added
        self.loop = asyncio.get_event_loop()
        self.autoalloc = None  # the AutoAlloc service, once the server runs
        self.info: dict = {}
        #: why the journal cannot be written now (None: it can)
        self.journal_down: JournalUnavailable | None = None
        #: facts that happened while the journal was down, to record when it is back
        self.held: list[dict] = []
        self.streams: list = []  # callbacks that see every recorded event
        #: watching clients (hpcqueue.server.watch.Watch): told of every recorded event and
        #: of the allocation service's decisions
        self.watches: list = []
        #: callbacks told of tasks that failed for good, [(job id, index), ...] per event
        self.failure_watchers: list = []
        state.just_failed = []  # collected by apply, drained in _effects
        self.compacted_size = 0  # bytes of the journal right after its last compaction
        #: the loop timer for the earliest delayed retry, and the time it is set for
        self._due_timer: asyncio.TimerHandle | None = None
        self._due_at: float | None = None
        #: bytes of a function task's result kept in memory; a bigger one goes to a file
        #: (hpcqueue.calls), under `server_dir` when a worker sent it inline anyway
        self.result_limit = DEFAULT_RESULT_LIMIT
        self.server_dir: str | None = None

    # ------------------------------------------------------------- events

    def record(self, event: dict) -> None:
        """Journal EVENT, then apply it.  If it cannot be journaled: a fact is held, anything
        else raises JournalUnavailable, and nothing changes."""
        journal = self.journal
        if journal is not None:
            try:
                if self.journal_down is not None:
                    raise JournalUnavailable(journal.path, self.journal_down.cause)
                journal.write([event])
            except JournalUnavailable as e:
                self._journal_failed(e)
                if event["e"] in _FACTS:
                    self.held.append(event)
                    return
                raise
        try:
            self.state.apply(event)
        except Exception:
            # a bug of ours (requests are checked before they become events): keep the
            # event out of the journal, so that the next start does not replay it
            if journal is not None:
                journal.undo_last()
            log.exception("internal error: event %r could not be applied; it was taken back "
                          "out of the journal", event.get("e"))
            raise
        self._effects(event)

    def retry_journal(self) -> bool:
        """Try to write again after a failure; True once the journal is back."""
        if self.journal_down is None:
            return True
        cause = self.journal_down.cause
        held = self.held
        note = {"e": "note", "msg": f"journal writable again after: {cause}", "t": time.time()}
        try:
            self.journal.write([*held, note])
        except JournalUnavailable:
            return False
        self.journal_down, self.held = None, []
        log.warning("journal %s can be written again (after: %s): %d event(s) held meanwhile "
                    "were recorded", self.journal.path, cause, len(held))
        for event in [*held, note]:
            self.state.apply(event)
            self._effects(event)
        self.schedule_dispatch()
        self._schedule_due()
        return True

    def compact(self) -> tuple[int, int]:
        """Rewrite the journal as a snapshot of the state; (bytes before, bytes after).

        It runs in the loop, between two events, so the snapshot is the state as journaled
        and no event falls between it and the next."""
        from hpcqueue.journal import snapshot

        if self.journal is None:
            raise JournalError("this server keeps no journal (start it with --journal)")
        if self.journal_down is not None:
            raise JournalUnavailable(self.journal.path, self.journal_down.cause)
        t0 = time.monotonic()
        before, after = self.journal.replace_with(snapshot.iter_dump(self.state))
        self.compacted_size = after
        log.info("journal %s compacted: %d -> %d bytes in %.2fs", self.journal.path, before,
                 after, time.monotonic() - t0)
        return before, after

    def _journal_failed(self, error: JournalUnavailable) -> None:
        if self.journal_down is None:
            log.error("journal %s cannot be written (%s): refusing submits and pausing "
                      "dispatch until it can; nothing acknowledged was lost; retrying every "
                      "second", error.path, error.cause)
        self.journal_down = error

    def _effects(self, event: dict) -> None:
        state = self.state
        over = None
        e = event["e"]
        if e == "done":
            self._hungry[event["w"]] = None
        elif e == "worker":
            self._hungry[event["id"]] = None
        if e in _ADDS_WORK or state.ready_added != self._ready_added:
            self._ready_added = state.ready_added
            self._all_hungry = True
        if state.just_failed:  # before just_done: a waiter hears of failures, then the end
            failed, state.just_failed = state.just_failed, []
            for watch in self.failure_watchers:
                watch(failed)
            over = self._over_max_fails(failed)
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
        if state.delayed:
            self._schedule_due()
        for stream in self.streams:
            stream(event)
        for watch in self.watches:
            watch.event(event)
        if over:  # after this event's effects: the cancel is an event of its own
            for job_id, why in over:
                log.info("job %d canceled: %s", job_id, why)
                try:
                    self.record({"e": "cancel", "ids": [job_id], "why": why, "t": time.time()})
                except JournalUnavailable:  # its next failure tries again
                    log.warning("job %d: the cancel of --max-fails waits for the journal",
                                job_id)

    def _over_max_fails(self, failed: list) -> list[tuple[int, str]]:
        """(job id, why) of the jobs that FAILED tasks took to their --max-fails."""
        out = []
        for job_id in dict.fromkeys(j for j, _ in failed):
            job = self.state.jobs.get(job_id)
            limit = job.spec.get("max_fails") if job is not None else None
            if limit and not job.canceled and not job.done and job.counts[FAILED] >= limit:
                out.append((job_id, f"{job.counts[FAILED]} of its tasks failed "
                                    f"(--max-fails {limit})"))
        return out

    def send(self, peer: Peer, message) -> None:
        peer.writer.write(peer.session.seal(message))

    # ------------------------------------------------------------- jobs

    def submit(self, spec: dict) -> Job:
        job_id = self.state.next_job_id
        self.record({"e": "job", "id": job_id, "spec": spec, "t": time.time()})
        job = self.state.jobs[job_id]
        log.info("job %d submitted: %d tasks", job_id, job.n)
        self._warn_if_unrunnable(job)
        return job

    def _warn_if_unrunnable(self, job: Job) -> None:
        """One WARNING, at submit, for a job that no connected worker and no allocation
        queue can ever run (e.g. --cpus 64 and no such worker).  Only with a worker
        connected or a queue: a job submitted before the workers start is not a mistake."""
        from hpcqueue.server.explain import placement
        from hpcqueue.autoalloc.model import QueueState
        from hpcqueue.autoalloc.service import limits_of

        workers = [self.state.workers[w] for w in self.live if w in self.state.workers]
        queues = [(q.params.name or str(q.id), limits_of(q.params))
                  for q in self.state.alloc.queues.values() if q.state is QueueState.ACTIVE]
        if not job.waiting or not (workers or queues):
            return
        why = placement(job, workers, queues, time.time())
        if why is not None and why.reason != "allocation":
            log.warning("job %d cannot run: %s (`hpcqueue task explain %d ID` tells more)",
                        job.id, why.message, job.id)

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
        self.liveness.remove(wid)
        w = self.state.workers.get(wid)
        if w is not None and w.state is WorkerState.RUNNING:
            log.info("worker %d %s: %s", wid, "lost" if crash else "stopped", reason)
            self.record({"e": "wgone", "id": wid, "reason": reason, "crash": crash,
                         "t": time.time()})

    # ------------------------------------------------------------- delayed retries

    def _schedule_due(self) -> None:
        """Set the timer for the earliest delayed retry, unless it is set for that already."""
        heap = self.state.delayed
        if not heap:
            return
        at = heap[0][0]
        if self._due_timer is not None:
            if self._due_at <= at:
                return
            self._due_timer.cancel()
        self._due_at = at
        self._due_timer = self.loop.call_later(max(0.0, at - time.time()), self._due)

    def _due(self) -> None:
        self._due_timer = self._due_at = None
        heap = self.state.delayed
        now = time.time()
        if heap and heap[0][0] <= now:
            try:
                self.record({"e": "due", "t": now})
            except JournalUnavailable:
                self._due_at = now + DUE_RETRY  # and sooner, when the journal is back
                self._due_timer = self.loop.call_later(DUE_RETRY, self._due)
                return
        self._schedule_due()  # the next one (or this one again, if the clock went back)

    # ------------------------------------------------------------- dispatch

    def schedule_dispatch(self) -> None:
        if not self._dispatch_scheduled and self.live and self.journal_down is None:
            self._dispatch_scheduled = True
            self.loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """One round: the ready jobs' tasks to the workers that may have room, at most
        ROUND_TASKS; a full round goes on at the loop's next turn."""
        self._dispatch_scheduled = False
        state = self.state
        if self._all_hungry:
            ids = self.live
        else:
            live = self.live
            ids = [wid for wid in self._hungry if wid in live]
        self._hungry, self._all_hungry = {}, False
        workers = [state.workers[wid] for wid in ids]
        now = time.time()
        plan = self._plan(state.ready_jobs(), workers, now, ROUND_TASKS)
        sizes = [sum(len(p[k]) for k in range(1, len(p), 2)) for _, p in plan]
        handed = sum(sizes)
        if handed >= ROUND_TASKS:
            # the round was cut short: whoever it looked at may have room left
            self._hungry.update(dict.fromkeys(w.id for w in workers))
            self.schedule_dispatch()
        else:  # a worker given a full batch may have room for more at the next round
            self._hungry.update((w.id, None) for (w, _), k in zip(plan, sizes)
                                if k >= dispatch.MAX_BATCH)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dispatch (%s): %d task(s) to %d of %d worker(s) looked at",
                      self.dispatch_policy, handed, len(plan), len(workers))
        for n, (w, picked) in enumerate(plan):
            try:
                self.record({"e": "start", "w": w.id, "tasks": picked, "t": now})
            except JournalUnavailable:
                # taken for this and the later workers, never started: they wait again
                self._all_hungry = True
                for _, rest in reversed(plan[n:]):
                    for k in reversed(range(0, len(rest), 2)):
                        state.jobs[rest[k]].untake(rest[k + 1])
                return  # dispatch resumes when the journal is back
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
        "kind", "cmd", "shell", "env", "cwd", "stdout", "stderr", "time_limit", "cpus", "res",
        "submit_dir", "time_request", "stream", "function", "stdin", "task_dir",
    )}
