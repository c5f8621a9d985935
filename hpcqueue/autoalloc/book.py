"""Allocation queues and allocations as server state, changed only by events.

Events (``ServerState.apply`` routes them to the ``_on_*`` methods here):

- ``aq_add``: a queue was added (``id``, ``params``)
- ``aq_pause`` / ``aq_resume``: by hand, or automatically after failures (``reason``)
- ``aq_remove``: the queue drains, or with ``force`` its allocations were cancelled
- ``aq_edit``: `alloc edit` changed options of a live queue (``id``, ``changes``: field ->
  new value, editable options only); the next cycle uses them, allocations already
  submitted keep their script; the change is kept for `alloc explain` (``edits``)
- ``alloc_new``: an allocation was submitted (``queue``, ``id``, ``job_id``, ``dir``)
- ``alloc_submit_failed``: a submission failed (``queue``, ``error``)
- ``alloc_state``: an allocation changed state (``id``, ``state``, ``reason``, ``fault``,
  and ``started``/``ended``: the scheduler's own times, where its status gives them; they
  replace the server's clock for the allocation's start and end)

Workers link themselves to an allocation by the ``alloc`` id in their hello.

What the allocation's workers ran is derived as results come in (``ServerState._on_done``
calls :meth:`Allocation.task_ran`, O(1) a result), so a replay of the journal arrives at
the same figures: ``alloc efficiency`` reads them, it never scans tasks.
"""

from __future__ import annotations

from collections import deque

from hpcqueue.autoalloc.model import AllocState, QueueParams, QueueState

LIVE = (AllocState.QUEUED, AllocState.RUNNING)
#: how many of a queue's edits it keeps for `alloc explain`
KEPT_EDITS = 10


class Allocation:
    __slots__ = ("id", "queue", "job_id", "dir", "state", "submitted", "started", "ended",
                 "reason", "fault", "workers", "live_workers", "expected",
                 "worker_cpus", "used", "first_task", "last_task")

    def __init__(self, ev: dict):
        self.id: str = ev["id"]
        self.queue: int = ev["queue"]
        self.job_id: str = ev["job_id"]
        self.dir: str = ev["dir"]
        self.state = AllocState.QUEUED
        self.submitted: float = ev["t"]
        self.started: float | None = None
        self.ended: float | None = None
        self.reason: str | None = None
        self.fault = False
        self.workers: set[int] = set()       # every worker that connected from it
        self.live_workers: set[int] = set()  # those still connected
        self.expected: int = ev.get("workers", 1)
        #: cpus of one of its workers (the most any reported): the allocation has
        #: worker_cpus × expected cpus
        self.worker_cpus = 0
        #: core-seconds its workers' tasks ran (run time × the task's cpus)
        self.used = 0.0
        #: when the first of its tasks started and the last ended (the workers' clocks)
        self.first_task: float | None = None
        self.last_task: float | None = None

    def task_ran(self, t0: float, t1: float, cpus: int) -> None:
        """A task of one of its workers ran from T0 to T1 on CPUS cpus."""
        self.used += (t1 - t0) * cpus
        if self.first_task is None or t0 < self.first_task:
            self.first_task = t0
        if self.last_task is None or t1 > self.last_task:
            self.last_task = t1

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def summary(self) -> dict:
        return {"id": self.id, "queue": self.queue, "job_id": self.job_id,
                "state": self.state.value, "submitted": self.submitted, "started": self.started,
                "ended": self.ended, "reason": self.reason, "fault": self.fault,
                "workers": len(self.workers), "live_workers": len(self.live_workers),
                "dir": self.dir}


class AllocQueue:
    def __init__(self, queue_id: int, params: QueueParams, t: float):
        self.id = queue_id
        self.params = params
        self.state = QueueState.ACTIVE
        self.pause_reason: str | None = None
        self.created = t
        self.next_alloc = 1
        self.faults_in_row = 0
        self.submit_failures = 0
        self.last_failure: float | None = None
        self.last_error: str | None = None
        self.allocations: dict[str, Allocation] = {}
        self.decisions: deque = deque(maxlen=30)  # (t, submit, reason, unfit); not journaled
        #: [t, {field: [old, new]}] of its last edits (journaled: aq_edit, and snapshots)
        self.edits: deque = deque(maxlen=KEPT_EDITS)

    def live(self) -> list[Allocation]:
        return [a for a in self.allocations.values() if a.live]

    def summary(self) -> dict:
        live = self.live()
        p = self.params
        return {
            "id": self.id, "name": p.name, "scheduler": p.scheduler, "state": self.state.value,
            "pause_reason": self.pause_reason, "transport": p.transport,
            "queued": sum(a.state is AllocState.QUEUED for a in live),
            "running": sum(a.state is AllocState.RUNNING for a in live),
            "workers": sum(len(a.live_workers) for a in live),
            "allocations": len(self.allocations), "faults_in_row": self.faults_in_row,
            "submit_failures": self.submit_failures, "last_error": self.last_error,
            "params": p.to_dict(),
        }


class AllocBook:
    def __init__(self) -> None:
        self.queues: dict[int, AllocQueue] = {}
        self.next_queue_id = 1
        self.by_id: dict[str, Allocation] = {}

    # ------------------------------------------------------------- queues

    def _on_aq_add(self, ev: dict) -> None:
        q = AllocQueue(ev["id"], QueueParams.from_dict(ev["params"]), ev["t"])
        self.queues[q.id] = q
        self.next_queue_id = max(self.next_queue_id, q.id + 1)

    def _on_aq_pause(self, ev: dict) -> None:
        q = self.queues[ev["id"]]
        if q.state is QueueState.ACTIVE:
            q.state = QueueState.PAUSED
            q.pause_reason = ev.get("reason") or "paused by `alloc pause`"

    def _on_aq_resume(self, ev: dict) -> None:
        q = self.queues[ev["id"]]
        if q.state is QueueState.PAUSED:
            q.state = QueueState.ACTIVE
            q.pause_reason = None
            q.faults_in_row = 0
            q.submit_failures = 0
            q.last_failure = None

    def _on_aq_edit(self, ev: dict) -> None:
        q = self.queues[ev["id"]]
        old = q.params.to_dict()
        changed = {k: [old[k], v] for k, v in ev["changes"].items() if k in old and old[k] != v}
        if changed:
            q.params = QueueParams.from_dict({**old, **{k: v for k, (_, v) in changed.items()}})
            q.edits.append([ev["t"], changed])

    def _on_aq_remove(self, ev: dict) -> None:
        q = self.queues[ev["id"]]
        q.state = QueueState.DRAINING if q.live() else QueueState.REMOVED

    # ------------------------------------------------------------- allocations

    def _on_alloc_new(self, ev: dict) -> None:
        q = self.queues[ev["queue"]]
        a = Allocation(ev)
        q.allocations[a.id] = a
        self.by_id[a.id] = a
        q.next_alloc = max(q.next_alloc, int(a.id.rsplit(".", 1)[1]) + 1)
        q.submit_failures = 0
        q.last_failure = None

    def _on_alloc_submit_failed(self, ev: dict) -> None:
        q = self.queues[ev["queue"]]
        q.submit_failures += 1
        q.last_failure = ev["t"]
        q.last_error = ev["error"]
        self._fault(q, f"submission failed: {ev['error']}", ev["t"])

    def _on_alloc_state(self, ev: dict) -> None:
        a = self.by_id.get(ev["id"])
        if a is None or not a.live:
            return
        state = AllocState(ev["state"])
        t = ev["t"]
        if state is AllocState.RUNNING and a.started is None:
            a.started = ev.get("started") or t
        a.state = state
        if not a.live:
            a.ended = ev.get("ended") or t
            if ev.get("started") and a.started is not None:
                a.started = min(ev["started"], a.ended)  # the scheduler's, not a poll's
            a.reason = ev.get("reason")
            a.fault = bool(ev.get("fault"))
            a.live_workers.clear()
            q = self.queues[a.queue]
            if a.fault:
                q.last_error = f"allocation {a.id}: {a.reason}"
                self._fault(q, f"allocation {a.id} {a.reason}", t)
            elif a.workers:
                q.faults_in_row = 0
            if q.state is QueueState.DRAINING and not q.live():
                q.state = QueueState.REMOVED

    def _fault(self, q: AllocQueue, what: str, t: float) -> None:
        q.faults_in_row += 1
        if q.faults_in_row >= q.params.pause_after and q.state is QueueState.ACTIVE:
            q.state = QueueState.PAUSED
            q.pause_reason = (f"paused after {q.faults_in_row} failures in a row (last: {what}); "
                              f"fix the cause, then `hpcqueue alloc resume {q.id}`")

    # ------------------------------------------------------------- workers

    def worker_connected(self, worker_id: int, alloc_id: str | None, t: float,
                         cpus: int = 1) -> None:
        a = self.by_id.get(alloc_id) if alloc_id else None
        if a is None or not a.live:
            return
        a.worker_cpus = max(a.worker_cpus, cpus)
        a.workers.add(worker_id)
        a.live_workers.add(worker_id)
        if a.state is AllocState.QUEUED:
            a.state = AllocState.RUNNING
        if a.started is None:
            a.started = t

    def worker_left(self, worker_id: int, alloc_id: str | None) -> None:
        a = self.by_id.get(alloc_id) if alloc_id else None
        if a is not None:
            a.live_workers.discard(worker_id)
