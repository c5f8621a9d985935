"""The server's whole state as a few journal events, and applying them back.

Compaction rewrites the journal as ``dump(state)`` followed by the events since.  A restart
applies these events like any other (``ServerState.apply`` routes the kinds in ``KINDS`` to
:func:`load`) and arrives at the same state, derived parts included: the ready jobs, each
worker's running tasks and counters, the allocation book's index of allocations.

Events:

- ``snapshot``: everything but the jobs: ``v`` (the format, ``FORMAT``), the next job and
  worker ids, ``workers``, ``alloc`` (queues and allocations), ``jobs`` (how many
  ``snapjob`` follow) and ``events`` (how many events follow in all).  Applying it replaces
  the state: jobs emptied, workers and the allocation book replaced.
- ``snapjob``: one job: its spec and everything a :class:`~hpcqueue.jobs.Job` changes after
  its submission, and ``chunks``, the number of ``snapcols`` events that follow with its
  columns (0 while none of its tasks has started).
- ``snapcols``: the columns of tasks ``lo`` .. ``lo + k - 1`` of job ``id``: ``cols`` holds
  one little-endian byte string per column, in ``COLUMNS`` order.  At most ``CHUNK_TASKS``
  tasks per event (29 bytes a task), so that no event comes near 1 GiB packed; a job of
  100,000,000 tasks takes six.

A job's spec travels as its ``job`` event carried it, so a ``snapjob`` is no bigger than
that event was; an open job's spec holds the entries and ids its ``append`` events added
(see :meth:`~hpcqueue.jobs.Job.append`), and ``open`` says whether it still takes more.
Its delayed retries (``retry_at``) and first failures (``failed_since``) travel as
``[index, time]`` pairs; the state's heap of delayed retries is derived from them.  A
snapshot without them (written before they existed) has none.  A function job's results
travel as ``[index, result]`` pairs (``results``), as its ``done`` events carried them.
Dependencies (:mod:`hpcqueue.deps`): the jobs a job still waits for (``waiting_on``, from
which the state's ``after`` index is derived), the count of unfinished tasks each waiting
task of it still waits for (``unmet``, ``[index, count]`` pairs) and why a dependency
canceled it (``reason``); its lists of task dependencies come from its spec.  A snapshot
without them (written before they existed) has none.

Caches that are not journaled (an allocation queue's recent decisions) come back empty, and
so do the per-apply outputs ``just_done``, ``to_kill`` and ``just_failed``.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from heapq import heappush
from typing import TYPE_CHECKING, Iterator

from hpcqueue.autoalloc.book import Allocation, AllocQueue
from hpcqueue.autoalloc.model import AllocState, QueueParams, QueueState
from hpcqueue.exceptions import JournalError
from hpcqueue.jobs import Job
from hpcqueue.model import WorkerState

if TYPE_CHECKING:
    from hpcqueue.autoalloc.book import AllocBook
    from hpcqueue.state import ServerState, WorkerRecord

#: the layout of these events; a reader refuses any other
FORMAT = 1
#: the event kinds :func:`load` applies
KINDS = ("snapshot", "snapjob", "snapcols")
#: a job's columns as :meth:`Job._columns` makes them: attribute, array type code (None: a
#: bytearray)
COLUMNS = (("state", None), ("starts", "H"), ("crashes", None), ("retries", None),
           ("exit", "i"), ("worker", "I"), ("t0", "d"), ("t1", "d"))
BYTES_PER_TASK = 29
#: tasks per ``snapcols`` event: 16,777,216 tasks are 464 MiB of columns
CHUNK_TASKS = 1 << 24

_SWAP = sys.byteorder != "little"  # columns travel little-endian


# ------------------------------------------------------------------ dump


def dump(state: ServerState, chunk_tasks: int = CHUNK_TASKS) -> list[dict]:
    """Events that describe STATE whole; they share nothing that STATE changes later."""
    return list(iter_dump(state, chunk_tasks))


def iter_dump(state: ServerState, chunk_tasks: int = CHUNK_TASKS) -> Iterator[dict]:
    """The events of :func:`dump`, one at a time, so that a writer holds one chunk of columns
    at once.  Take them all before the state changes again: a job's columns are copied when
    its ``snapcols`` event is made."""
    if chunk_tasks < 1:
        raise ValueError(f"chunk_tasks must be at least 1, not {chunk_tasks}")
    jobs = list(state.jobs.values())
    chunks = [_chunks(job, chunk_tasks) for job in jobs]
    yield {
        "e": "snapshot", "v": FORMAT,
        "next_job_id": state.next_job_id, "next_worker_id": state.next_worker_id,
        "workers": [_worker_dict(w) for w in state.workers.values()],
        "alloc": _book_dict(state.alloc),
        "jobs": len(jobs), "events": len(jobs) + sum(chunks),
    }
    for job, k in zip(jobs, chunks):
        yield _job_dict(job, k)
        for lo in range(0, k * chunk_tasks, chunk_tasks):
            hi = min(lo + chunk_tasks, job.n)
            yield {"e": "snapcols", "id": job.id, "lo": lo,
                   "cols": [_column_bytes(getattr(job, name), code, lo, hi)
                            for name, code in COLUMNS]}


def _chunks(job: Job, chunk_tasks: int) -> int:
    if job.state is None:
        return 0
    return -(-job.n // chunk_tasks)


def _column_bytes(column, code: str | None, lo: int, hi: int) -> bytes:
    with memoryview(column) as view:
        part = view[lo:hi]
        data = part.tobytes()
        part.release()
    if _SWAP and code is not None:
        swapped = array(code, data)
        swapped.byteswap()
        data = swapped.tobytes()
    return data


def _job_dict(job: Job, chunks: int) -> dict:
    return {
        "e": "snapjob", "id": job.id, "spec": job.spec, "submitted": job.submitted,
        "ended": job.ended, "cursor": job.cursor, "requeued": list(job.requeued),
        "counts": list(job.counts), "errors": [[i, msg] for i, msg in job.errors.items()],
        "canceled": job.canceled, "mean_runtime": job.mean_runtime, "chunks": chunks,
        "open": job.open,
        "retry_at": [[i, t] for i, t in job.retry_at.items()],
        "failed_since": [[i, t] for i, t in job.failed_since.items()],
        "results": [[i, r] for i, r in job.results.items()],
        "waiting_on": sorted(job.waiting_on),
        "unmet": [[i, k] for i, k in job.unmet.items()],
        "reason": job.reason,
    }


def _worker_dict(w: WorkerRecord) -> dict:
    by_job: dict[int, list[int]] = {}
    for job_id, i in sorted(w.tasks):
        by_job.setdefault(job_id, []).append(i)
    tasks: list = []
    for job_id, idxs in by_job.items():
        tasks += (job_id, idxs)
    return {
        "id": w.id, "info": w.info, "connected": w.connected, "state": w.state.value,
        "ended": w.ended, "reason": w.reason, "cpus": w.cpus, "res": dict(w.res),
        "used_cpus": w.used_cpus, "used_res": dict(w.used_res), "tasks": tasks,
        "deadline": w.deadline, "finished": w.finished,
    }


def _book_dict(book: AllocBook) -> dict:
    queues = [{
        "id": q.id, "params": q.params.to_dict(), "state": q.state.value,
        "pause_reason": q.pause_reason, "created": q.created, "next_alloc": q.next_alloc,
        "faults_in_row": q.faults_in_row, "submit_failures": q.submit_failures,
        "last_failure": q.last_failure, "last_error": q.last_error,
        "edits": [[t, dict(changed)] for t, changed in q.edits],
    } for q in book.queues.values()]
    # in the order of `by_id`; each queue's own dict holds its allocations in the same order
    allocs = [{
        "id": a.id, "queue": a.queue, "job_id": a.job_id, "dir": a.dir, "state": a.state.value,
        "submitted": a.submitted, "started": a.started, "ended": a.ended, "reason": a.reason,
        "fault": a.fault, "workers": sorted(a.workers), "live_workers": sorted(a.live_workers),
        "expected": a.expected, "worker_cpus": a.worker_cpus, "used": a.used,
        "first_task": a.first_task, "last_task": a.last_task,
    } for a in book.by_id.values()]
    return {"next_queue_id": book.next_queue_id, "queues": queues, "allocs": allocs}


# ------------------------------------------------------------------ load


def load(state: ServerState, ev: dict) -> None:
    """Apply one event of a snapshot (any kind in ``KINDS``) to STATE."""
    kind = ev["e"]
    if kind == "snapshot":
        _load_snapshot(state, ev)
    elif kind == "snapjob":
        _load_job(state, ev)
    elif kind == "snapcols":
        _load_columns(state, ev)
    else:
        raise ValueError(f"not a snapshot event: {kind!r}")


def _load_snapshot(state: ServerState, ev: dict) -> None:
    from hpcqueue.state import WorkerRecord  # state.py routes events here: import late

    if ev.get("v") != FORMAT:
        raise JournalError(f"the journal holds a snapshot of format {ev.get('v')!r}, and this "
                           f"hpcqueue reads format {FORMAT}: use the release that wrote it")
    # emptied in place: other objects (the event handlers, the server) hold these
    state.jobs.clear()
    state.after.clear()
    state.ready.clear()
    state.delayed.clear()
    state._ready_order = None
    state.just_done.clear()
    state.to_kill.clear()
    if state.just_failed is not None:
        state.just_failed.clear()
    state.next_job_id = ev["next_job_id"]
    state.next_worker_id = ev["next_worker_id"]
    state.workers.clear()
    for d in ev["workers"]:
        tasks = d["tasks"]
        state.workers[d["id"]] = WorkerRecord(
            id=d["id"], info=d["info"], connected=d["connected"],
            state=WorkerState(d["state"]), ended=d["ended"], reason=d["reason"],
            cpus=d["cpus"], res=dict(d["res"]), used_cpus=d["used_cpus"],
            used_res=dict(d["used_res"]),
            tasks={(tasks[k], i) for k in range(0, len(tasks), 2) for i in tasks[k + 1]},
            deadline=d["deadline"], finished=d["finished"])
    _load_book(state.alloc, ev["alloc"])


def _load_book(book: AllocBook, data: dict) -> None:
    book.queues.clear()
    book.by_id.clear()
    book.next_queue_id = data["next_queue_id"]
    for d in data["queues"]:
        q = AllocQueue(d["id"], QueueParams.from_dict(d["params"]), d["created"])
        q.state = QueueState(d["state"])
        q.pause_reason = d["pause_reason"]
        q.next_alloc = d["next_alloc"]
        q.faults_in_row = d["faults_in_row"]
        q.submit_failures = d["submit_failures"]
        q.last_failure = d["last_failure"]
        q.last_error = d["last_error"]
        q.edits.extend([t, dict(changed)] for t, changed in d.get("edits", ()))  # (older: none)
        book.queues[q.id] = q
    for d in data["allocs"]:
        a = Allocation({"id": d["id"], "queue": d["queue"], "job_id": d["job_id"],
                        "dir": d["dir"], "t": d["submitted"], "workers": d["expected"]})
        a.state = AllocState(d["state"])
        a.started = d["started"]
        a.ended = d["ended"]
        a.reason = d["reason"]
        a.fault = d["fault"]
        a.workers = set(d["workers"])
        a.live_workers = set(d["live_workers"])
        # (snapshots written before `alloc efficiency` lack these: nothing counted)
        a.worker_cpus = d.get("worker_cpus", 0)
        a.used = d.get("used", 0.0)
        a.first_task = d.get("first_task")
        a.last_task = d.get("last_task")
        book.by_id[a.id] = a
        book.queues[a.queue].allocations[a.id] = a


def _load_job(state: ServerState, ev: dict) -> None:
    spec = ev["spec"]
    is_open = ev.get("open", False)  # (snapshots written before open jobs do not say)
    if is_open:  # it grows its entries and ids: its own copies, not the event's
        spec = {**spec, "entries": list(spec["entries"]), "ids": list(spec["ids"])}
    job = Job(ev["id"], spec, ev["submitted"])
    job.open = is_open
    job.ended = ev["ended"]
    job.cursor = ev["cursor"]
    job.requeued = deque(ev["requeued"])
    job.counts = list(ev["counts"])
    job.errors = {i: msg for i, msg in ev["errors"]}
    job.canceled = ev["canceled"]
    job.mean_runtime = ev["mean_runtime"]
    job.retry_at = {i: t for i, t in ev.get("retry_at", ())}
    job.failed_since = {i: t for i, t in ev.get("failed_since", ())}
    job.results = {i: r for i, r in ev.get("results", ())}
    for i, t in job.retry_at.items():
        heappush(state.delayed, (t, job.id, i))
    job.waiting_on = set(ev.get("waiting_on", ()))
    for dep_id in sorted(job.waiting_on):
        state.after.setdefault(dep_id, []).append(job)
    job.unmet = {i: k for i, k in ev.get("unmet", ())}
    job.reason = ev.get("reason")
    if ev["chunks"]:
        for name, code in COLUMNS:  # filled by the snapcols events that follow
            setattr(job, name, bytearray() if code is None else array(code))
    state._add_job(job)
    state._update_ready(job)


def _load_columns(state: ServerState, ev: dict) -> None:
    job_id, lo, cols = ev["id"], ev["lo"], ev["cols"]
    job = state.jobs.get(job_id)
    have = None if job is None or job.state is None else len(job.state)
    k = len(cols[0]) if cols else 0
    if have != lo or len(cols) != len(COLUMNS) or lo + k > job.n:
        raise JournalError(f"snapshot: the columns of job {job_id} from task {lo} do not "
                           f"follow what came before (tasks so far: {have}); the snapshot "
                           "is damaged")
    columns = [getattr(job, name) for name, _ in COLUMNS]
    for (name, code), column, data in zip(COLUMNS, columns, cols):
        if len(data) != k * (1 if code is None else column.itemsize):
            raise JournalError(f"snapshot: column {name} of job {job_id} from task {lo} has "
                               f"{len(data)} bytes for {k} tasks; the snapshot is damaged")
    for (_, code), column, data in zip(COLUMNS, columns, cols):
        if code is None:
            column.extend(data)  # a bytearray, grown in place
        elif _SWAP:
            part = array(code, data)
            part.byteswap()
            column.extend(part)
        else:
            column.frombytes(data)
