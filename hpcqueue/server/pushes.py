"""The requests a client keeps open while the server pushes to it: `wait` (the end of some
jobs, with their progress and the tasks that fail for good on the way) and `stream` (every
event recorded).  A client that falls too far behind is told so and cut off, so that it
cannot eat the server's memory.
"""

from __future__ import annotations

import asyncio

from hpcqueue.model import FAILED
from hpcqueue.server.checks import check_flag, check_seconds
from hpcqueue.server.core import Core, Peer
from hpcqueue.server.handlers import _job_ids


async def wait(core: Core, peer: Peer, msg: dict) -> None:
    """Reply when the jobs have ended; meanwhile push progress (``progress``) and the
    tasks that fail for good (``failures``: those failed so far first, then each as it
    fails, ``{"failed": [row, ...]}``)."""
    # with `unfinished` (`job wait`), `all` is the jobs unfinished now, not every job
    # ever: an old failed job would make every later `job wait all` fail
    ids = _job_ids(core, msg.get("jobs", "all"),
                   unfinished_if_all=check_flag(msg, "unfinished"))
    # at most 20 progress lines a second, however small the interval a peer asks for
    period = max(0.05, check_seconds(msg.get("interval"), "interval") or 0.25) \
        if msg.get("progress") else None
    watch = FailureWatch(core, peer, ids) if check_flag(msg, "failures") else None
    waiter = core.add_waiter(set(ids))
    eof = asyncio.ensure_future(peer.reader.read(1))
    try:
        while not waiter.event.is_set():
            ev = asyncio.ensure_future(waiter.event.wait())
            ends = {ev, eof} if watch is None else {ev, eof, watch.cut}
            done, _ = await asyncio.wait(ends, timeout=period,
                                         return_when=asyncio.FIRST_COMPLETED)
            ev.cancel()
            if eof in done:
                return  # the client went away
            if watch is not None and watch.cut in done:
                return  # it was told why
            if period is not None and not waiter.event.is_set():
                core.send(peer, {"progress": _progress(core, ids)})
    finally:
        if watch is not None:
            watch.stop()
        core.remove_waiter(waiter)
        eof.cancel()
        try:
            await eof  # let the read end before the next request is read
        except (asyncio.CancelledError, OSError, ConnectionError):
            pass
    core.send(peer, {"ok": True, "jobs": _summaries(core, ids)})


def _summaries(core: Core, ids: list[int]) -> list[dict]:
    """The summaries of the jobs of IDS still held (one may have been forgotten since)."""
    jobs = core.state.jobs
    return [jobs[j].summary() for j in ids if j in jobs]


def _progress(core: Core, ids: list[int]) -> list[dict]:
    """The summaries of a progress message: ``running`` counts the tasks started, and
    ``assigned`` those on a worker that has not had room to start them yet (prefetched;
    see :func:`hpcqueue.server.explain.started_counts` for the rule)."""
    from hpcqueue.server.explain import started_counts

    st = core.state
    on_workers = [j for j in st.jobs.values() if j.running]
    queued = started_counts(on_workers, [st.workers[w] for w in core.live if w in st.workers])
    out = _summaries(core, ids)
    for s in out:
        s["assigned"] = assigned = queued.get(s["id"], 0)
        s["running"] -= assigned
    return out


STREAM_BUFFER_LIMIT = 16 << 20  # bytes a stream client may fall behind before it is cut


async def stream_events(core: Core, peer: Peer) -> None:
    """Send every event recorded from now on, until the client goes away (or falls too far
    behind to keep up: then it is told so and cut off, so that it cannot eat memory)."""
    behind = asyncio.Event()
    transport = peer.writer.transport

    def push(event: dict) -> None:
        if behind.is_set():
            return
        if transport.get_write_buffer_size() > STREAM_BUFFER_LIMIT:
            behind.set()
            core.send(peer, {"ok": False, "error": "the stream fell too far behind the server "
                             "and was cut off"})
            return
        core.send(peer, {"event": event})

    core.send(peer, {"ok": True, "streaming": True})
    core.streams.append(push)
    eof = asyncio.ensure_future(peer.reader.read(1))
    cut = asyncio.ensure_future(behind.wait())
    try:
        await asyncio.wait({eof, cut}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        core.streams.remove(push)
        eof.cancel()
        cut.cancel()


FAILURES_PER_FRAME = 10_000  # rows of failed tasks a message holds at most


class FailureWatch:
    """Tells one client of the tasks of some jobs that fail for good, as the server records
    them (``Core.failure_watchers``, fed where `apply` marks a task failed); a client that
    falls too far behind is cut off, as a stream client is."""

    def __init__(self, core: Core, peer: Peer, job_ids: list[int]):
        self.core, self.peer = core, peer
        self.jobs = set(job_ids)
        self.cut = asyncio.get_running_loop().create_future()  # done when cut off
        jobs = core.state.jobs
        # the failures so far: a scan of each job, once (none when it has no failure), sent
        # in frames of FAILURES_PER_FRAME and whatever the buffer holds: a job has so many
        so_far = [self.row(j, i) for j in job_ids if jobs[j].counts[FAILED]
                  for i in jobs[j].indexes_in(FAILED)]
        for k in range(0, len(so_far), FAILURES_PER_FRAME):
            core.send(peer, {"failed": so_far[k:k + FAILURES_PER_FRAME]})
        core.failure_watchers.append(self.push)

    def push(self, failed: list[tuple[int, int]]) -> None:
        if self.cut.done():
            return
        rows = [self.row(j, i) for j, i in failed if j in self.jobs]
        if not rows:
            return
        if self.peer.writer.transport.get_write_buffer_size() > STREAM_BUFFER_LIMIT:
            self.cut.set_result(None)
            self.core.send(self.peer, {"ok": False, "error": "the report of failed tasks "
                                       "fell too far behind the server and was cut off; "
                                       "`hpcqueue job failed ID` lists them all"})
            return
        self.core.send(self.peer, {"failed": rows})

    def row(self, job_id: int, i: int) -> dict:
        job = self.core.state.jobs[job_id]
        return {"job": job_id, "id": job.ids.id_at(i),
                "entry": job.entries[i] if job.entries is not None else None,
                "exit_code": job.exit[i], "error": job.errors.get(i)}

    def stop(self) -> None:
        if self.push in self.core.failure_watchers:
            self.core.failure_watchers.remove(self.push)
