"""The `watch` request: what changed on the server, pushed to a client (`hpcqueue dashboard`)
as coalesced updates, never more often than its interval.

Each recorded event only notes what it touched (:meth:`Watch.event`): job ids, worker ids,
"the queues".  It never looks at tasks: a job's counts come from its counters
(:meth:`Job.summary`), and the ids come from the event itself (a ``done`` event's job ids
are taken from its rows, in C).  An event whose jobs are not named in it (a worker lost:
its tasks went back to waiting) touches the jobs that were unfinished at the last update.
When the client is slow to read, updates wait for it and their changes merge: it gets
fewer updates, never a growing backlog.

The first reply is ``{"ok": true, "watching": true, "update": U}`` with everything (the
`jobs` most recent jobs and every unfinished one, the running workers, the queues); then
``{"update": U}`` with what changed: ``jobs`` (summaries), ``forgotten`` (job ids),
``workers`` (rows; a worker that ended comes once with its end state), ``queues`` (all of
them, each with its live allocations and its latest `alloc explain` decision) and
``server`` (totals), each only when it changed.
"""

from __future__ import annotations

import asyncio
import time
from operator import itemgetter

from hpcqueue.autoalloc.model import QueueState
from hpcqueue.server.core import Core, Peer
from hpcqueue.server.checks import check_int, check_seconds

WATCH_JOBS = 1000  # most recent jobs in the first update, unless the client asks for fewer
WATCH_INTERVAL = 0.25  # seconds between updates at least, unless the client asks otherwise
MIN_INTERVAL = 0.1  # ... and never less: at most ten updates a second
QUEUE_ALLOCS = 20  # allocations of a queue an update shows at most: the live, then recent
#: events that name no job but may change jobs' counts: every unfinished job is looked at
_JOBS_UNNAMED = frozenset({"server", "wgone", "due", "snapshot", "snapjob", "snapcols", "ids"})
_first_of = itemgetter(0)


def worker_row(w) -> dict:
    """A worker as the dashboard shows it: its summary, and the cpus its tasks hold."""
    row = w.summary()
    row["used_cpus"] = w.used_cpus
    return row


def queue_row(q) -> dict:
    """A queue's summary, its allocations (the live, then the most recent ended, at most
    QUEUE_ALLOCS) and its latest decision (what `alloc explain` shows last)."""
    row = q.summary()
    row.pop("params", None)
    allocs = sorted(q.allocations.values(), key=lambda a: (not a.live, -(a.submitted or 0)))
    row["allocs"] = [a.summary() for a in allocs[:QUEUE_ALLOCS]]
    if q.decisions:
        t, submit, reason, unfit = q.decisions[-1]
        row["decision"] = {"t": t, "submit": submit, "reason": reason, "unfit": unfit}
    else:
        row["decision"] = None
    return row


class Watch:
    """What one watching client has not been told yet."""

    def __init__(self, core: Core, recent: int):
        self.core = core
        self.recent = recent
        self.jobs: set[int] = set()  # job ids touched since the last update
        self.workers: set[int] = set()
        self.forgotten: list[int] = []
        self.unnamed = False  # an event touched jobs it does not name
        self.queues = False
        self.unfinished: set[int] = set()  # job ids unfinished at the last update
        self.dirty = asyncio.Event()

    # ------------------------------------------------------------- O(1) per event

    def event(self, ev: dict) -> None:
        kind = ev["e"]
        if kind == "done":
            self.jobs.update(map(_first_of, ev["r"]))
            self.workers.add(ev["w"])
        elif kind in ("start", "back"):
            self.jobs.update(ev["tasks"][::2])
            self.workers.add(ev["w"])
        elif kind in ("job", "append", "close"):
            self.jobs.add(ev["id"])
        elif kind == "cancel":
            self.jobs.update(ev["ids"])
        elif kind == "forget":
            self.forgotten.extend(ev["ids"])
        elif kind in ("worker", "wgone"):
            self.workers.add(ev["id"])
            self.queues = self.queues or bool(self.core.state.alloc.queues)
        elif kind.startswith(("aq_", "alloc_")):
            self.queues = True
        elif kind == "note":
            return
        if kind in _JOBS_UNNAMED:
            self.unnamed = True
        self.dirty.set()

    def decided(self) -> None:
        """The allocation service noted a new decision for a queue."""
        self.queues = True
        self.dirty.set()

    # ------------------------------------------------------------- updates

    def first(self) -> dict:
        st = self.core.state
        ids = sorted(st.jobs)
        # the unfinished: a look at each job's flag, not its tasks (once per watch)
        wanted = set(ids[-self.recent:]) | {j for j in ids if not st.jobs[j].done}
        self.jobs = wanted
        self.workers = set(self.core.live)
        self.queues = True
        return self.take()

    def take(self) -> dict:
        """The update for what changed since the last one; the notes start afresh."""
        st = self.core.state
        self.dirty.clear()
        if self.unnamed:
            self.jobs |= self.unfinished
        out: dict = {"t": time.time()}
        rows = []
        for j in sorted(self.jobs):
            job = st.jobs.get(j)
            if job is None:
                continue
            rows.append(job.summary())
            if job.done:
                self.unfinished.discard(j)
            else:
                self.unfinished.add(j)
        if rows:
            out["jobs"] = rows
        if self.forgotten:
            out["forgotten"] = self.forgotten
            self.unfinished.difference_update(self.forgotten)
        workers = [worker_row(st.workers[w]) for w in sorted(self.workers) if w in st.workers]
        if workers:
            out["workers"] = workers
        if self.queues:
            out["queues"] = [queue_row(q) for q in st.alloc.queues.values()
                             if q.state is not QueueState.REMOVED]
        out["server"] = {"jobs": len(st.jobs), "workers": len(self.core.live),
                         "unfinished": len(self.unfinished)}
        self.jobs, self.workers, self.forgotten = set(), set(), []
        self.unnamed = self.queues = False
        return out


def _options(msg: dict) -> tuple[int, float]:
    recent = msg.get("jobs")
    recent = WATCH_JOBS if recent is None else check_int(recent, "jobs", 0, WATCH_JOBS)
    interval = check_seconds(msg.get("interval"), "interval")
    return recent, max(MIN_INTERVAL, WATCH_INTERVAL if interval is None else interval)


async def watch(core: Core, peer: Peer, msg: dict) -> None:
    """Serve a `watch` request until the client goes away (it sends nothing meanwhile)."""
    recent, interval = _options(msg)
    w = Watch(core, recent)
    core.send(peer, {"ok": True, "watching": True, "interval": interval, "update": w.first()})
    core.watches.append(w)
    eof = asyncio.ensure_future(peer.reader.read(1))
    last = time.monotonic()
    try:
        while True:
            # a slow reader holds the next update back; its changes merge meanwhile
            await peer.writer.drain()
            dirty = asyncio.ensure_future(w.dirty.wait())
            done, _ = await asyncio.wait({dirty, eof}, return_when=asyncio.FIRST_COMPLETED)
            dirty.cancel()
            if eof in done:
                return
            wait = last + interval - time.monotonic()
            if wait > 0:  # coalesce: what happens meanwhile goes into the same update
                done, _ = await asyncio.wait({eof}, timeout=wait)
                if eof in done:
                    return
            last = time.monotonic()
            core.send(peer, {"update": w.take()})
    except (ConnectionError, OSError):
        return
    finally:
        core.watches.remove(w)
        eof.cancel()

