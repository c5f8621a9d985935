"""The autoalloc loop: refresh statuses, decide, submit; journal every step.

One cycle:
1. refresh: one status call per scheduler and transport for all live
   allocations of all queues, and an ``alloc_state`` event for each change;
2. for each active queue, ask the policy how many allocations to submit, keep
   the decision and its reason for ``alloc explain``, and submit them, backing
   off after failed submissions.

The loop wakes when tasks are submitted or workers come and go, and polls
the scheduler every 2 s while an allocation is queued or booting, else every
10 s.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from hpcqueue.autoalloc import backends, policy
from hpcqueue.autoalloc.book import AllocQueue
from hpcqueue.autoalloc.model import (
    BACKOFF,
    MAX_STATUS_ERRORS,
    AllocState,
    QueueParams,
    QueueState,
)
from hpcqueue.autoalloc.render import render
from hpcqueue.exceptions import HpcqueueError, SchedulerError

log = logging.getLogger("hpcqueue.autoalloc")
FAST_POLL, SLOW_POLL = 2.0, 10.0


def demand_of(state) -> list[policy.Demand]:
    """What the jobs that may run now ask for: their tasks that may be handed out now, not
    the retries still waiting out a `--retry-delay` (workers for those come when they are
    due, not hours before)."""
    out = []
    for job in state.ready_jobs():
        if job.available:
            out.append(policy.Demand(
                job=job.id, count=job.available, cpus=job.cpus, gpus=job.res.get("gpus", 0),
                time_request=job.time_request, mean_runtime=job.mean_runtime,
                other=tuple(sorted(k for k, v in job.res.items() if k != "gpus" and v > 0))))
    return out


def limits_of(p: QueueParams) -> policy.Limits:
    return policy.Limits(time_limit=p.time_limit, backlog=p.backlog,
                         workers_per_alloc=p.workers_per_alloc,
                         max_worker_count=p.max_worker_count, cpus=p.cpus, gpus=p.gpus,
                         target_drain=p.target_drain)


def in_flight(q: AllocQueue) -> policy.InFlight:
    queued = running = booting = live = 0
    for a in q.live():
        if a.state is AllocState.QUEUED:
            queued += 1
        else:
            running += 1
            booting += max(0, a.expected - len(a.workers))
            live += len(a.live_workers)
    return policy.InFlight(queued, running, booting, live)


def write_script(params: QueueParams, queue_id: int, alloc_id: str, alloc_dir: Path,
                 server_dir: Path, worker_cmd: str | None = None) -> Path:
    """Render and write an allocation's script (with WORKER_CMD in place of the worker's
    command, for the reach probe)."""
    sched = backends.scheduler(params.scheduler)
    context = sched.context(params, queue_id, alloc_id, alloc_dir, server_dir)
    if worker_cmd is not None:
        context["worker_cmd"] = worker_cmd
    text = render(sched.template, context, params.template, template_text=params.template_text,
                  scheduler_dirs=sched.template_dirs())
    alloc_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    script = alloc_dir / "job.sh"
    script.write_text(text)
    script.chmod(0o700)
    return script


async def dry_run(params: QueueParams, server_dir: Path, transport=None) -> str:
    """Check the scheduler's commands are its own, render the script and submit it held,
    then cancel it: a bad partition or account fails here, with the scheduler's own
    message.  The held job never outlives the dry run without an error that names it."""
    from hpcqueue.autoalloc.identify import check_commands
    from hpcqueue.autoalloc.transports.cli import CliTransport

    sched = backends.scheduler(params.scheduler)
    transport = transport or backends.transport(params.scheduler, params.transport,
                                                 **_transport_options(params))
    if isinstance(transport, CliTransport):  # qsub and friends, here or over SSH
        await check_commands(sched, transport.run)
    where = server_dir / "autoalloc" / "dry-run"
    script = write_script(params, 0, "dry-run", where, server_dir)
    job_id = await transport.submit(sched, script, where, hold=True)
    if job_id == "dry-run":
        return script.read_text()
    try:
        await transport.cancel(sched, [job_id])
    except asyncio.CancelledError:
        await asyncio.shield(_cancel_quietly(sched, transport, job_id))
        raise
    except HpcqueueError as e:
        raise SchedulerError(
            f"the dry run's held job {job_id} was submitted but could not be cancelled ({e}): "
            f"remove it with `{' '.join(sched.cancel_argv([job_id]))}`") from None
    return script.read_text()


async def _cancel_quietly(sched, transport, job_id: str) -> None:
    try:
        await transport.cancel(sched, [job_id])
    except HpcqueueError as e:
        log.warning("cannot cancel the dry run's job %s: %s", job_id, e)


def _transport_options(params: QueueParams) -> dict:
    return {"login_host": params.login_host} if params.transport == "ssh" else {}


class AutoAlloc:
    def __init__(self, core, server_dir: Path):
        self.core = core
        self.book = core.state.alloc
        self.server_dir = server_dir
        self.wake = asyncio.Event()
        self._transports: dict = {}
        #: allocation id -> (failed status reads in a row, the last error); not journaled
        self.status_errors: dict[str, tuple[int, str]] = {}
        #: reach probes under way: token -> hostnames of the nodes that connected back
        self.probes: dict[str, list[str]] = {}
        self._last_poll = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def poke(self) -> None:
        self.wake.set()

    def backend(self, params: QueueParams):
        key = (params.scheduler, params.transport, params.login_host)
        if key not in self._transports:
            self._transports[key] = backends.transport(
                params.scheduler, params.transport, **_transport_options(params))
        return backends.scheduler(params.scheduler), self._transports[key]

    async def probe(self, params: QueueParams) -> str | None:
        """Check that a queue's nodes reach the server, with a short job that connects back
        (autoalloc/probe.py); None for the local scheduler."""
        import secrets

        from hpcqueue.autoalloc.probe import run_probe

        if params.scheduler == "local":
            return None
        # the address the workers try first: the queue's server-address, else the record's
        info = self.core.info
        address = f"{params.server_host or info.get('host')}:{info.get('port')}"
        token = secrets.token_hex(8)
        probe_dir = self.server_dir / "autoalloc" / f"probe-{token}"
        probe_dir.mkdir(parents=True, mode=0o700)
        self.probes[token] = arrivals = []
        sched, transport = self.backend(params)
        try:
            note = await run_probe(params, sched, transport, probe_dir, self.server_dir,
                                   address, token, arrivals)
        finally:
            del self.probes[token]
        shutil.rmtree(probe_dir, ignore_errors=True)  # kept when it failed, to look at
        log.info("queue probe: %s", note)
        return note

    def probe_arrived(self, token: str, hostname: str) -> None:
        if token in self.probes:
            self.probes[token].append(hostname)

    # ------------------------------------------------------------- loop

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            if not self.book.queues:
                continue
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours must not stop autoalloc for good
                log.exception("autoalloc cycle failed")

    def _poll_interval(self) -> float:
        for q in self.book.queues.values():
            for a in q.live():
                if a.state is AllocState.QUEUED or len(a.workers) < a.expected:
                    return FAST_POLL
        return SLOW_POLL

    async def cycle(self) -> None:
        now = time.monotonic()
        if now - self._last_poll >= self._poll_interval():
            self._last_poll = now
            await self.refresh()
        for q in list(self.book.queues.values()):
            if q.state is QueueState.ACTIVE:
                await self.scale(q)

    async def refresh(self) -> None:
        """One status call per backend for every live allocation of every queue."""
        groups: dict = {}
        for q in self.book.queues.values():
            for a in q.live():
                groups.setdefault((q.params.scheduler, q.params.transport, q.params.login_host),
                                  (q.params, []))[1].append(a)
        for params, allocs in groups.values():
            sched, transport = self.backend(params)
            if hasattr(transport, "remember"):
                for a in allocs:
                    transport.remember(a.job_id, Path(a.dir))
            log.debug("polling %s (%s) for the status of %d allocation(s): %s",
                      params.scheduler, params.transport, len(allocs),
                      " ".join(a.job_id for a in allocs))
            try:
                raw = await transport.status(sched, [a.job_id for a in allocs])
            except HpcqueueError as e:
                log.warning("cannot read allocation statuses: %s", e)
                self.status_failed(allocs, str(e))
                continue
            for a in allocs:
                self.status_errors.pop(a.id, None)
            log.debug("allocation statuses from %s: %s", params.scheduler,
                      ", ".join(f"{a.job_id} {raw.get(a.job_id)}" for a in allocs))
            for a in allocs:
                if not a.live:
                    continue
                state, end = sched.classify(raw.get(a.job_id), bool(a.workers))
                if state is a.state:
                    continue
                said = raw.get(a.job_id)
                times = {"started": said.started, "ended": said.ended} if said is not None else {}
                if state is AllocState.RUNNING and a.state is AllocState.QUEUED:
                    self.record_state(a, state, **times)
                elif end is not None:
                    self.record_state(a, state, end.text, end.fault, **times)

    def status_failed(self, allocs, error: str) -> None:
        """Count a failed status read against each allocation; give up on one without live
        workers after MAX_STATUS_ERRORS in a row (those with workers are known to run)."""
        for a in allocs:
            count = self.status_errors.get(a.id, (0, ""))[0] + 1
            self.status_errors[a.id] = (count, error)
            if count >= MAX_STATUS_ERRORS and not a.live_workers:
                del self.status_errors[a.id]
                self.record_state(
                    a, AllocState.UNKNOWN,
                    f"its status could not be read {count} times in a row (last: {error}); "
                    "no longer counted toward the backlog", fault=True)

    def record_state(self, a, state: AllocState, reason=None, fault=False,
                     started: float | None = None, ended: float | None = None) -> None:
        """Journal A's new STATE; STARTED and ENDED: the scheduler's own times, if it said."""
        ev = {"e": "alloc_state", "id": a.id, "state": state.value, "reason": reason,
              "fault": fault, "t": time.time()}
        if started is not None:
            ev["started"] = started
        if ended is not None:
            ev["ended"] = ended
        self.core.record(ev)
        log.info("allocation %s (job %s): %s%s", a.id, a.job_id, state.value,
                 f" ({reason})" if reason else "")

    # ------------------------------------------------------------- scaling

    async def scale(self, q: AllocQueue) -> None:
        decision = policy.decide(demand_of(self.core.state), limits_of(q.params), in_flight(q))
        if decision.submit and q.submit_failures:
            delay = BACKOFF[min(q.submit_failures, len(BACKOFF) - 1)]
            wait = q.last_failure + delay - time.time()
            if wait > 0:
                decision = policy.Decision(0, f"backing off after {q.submit_failures} failed "
                                              f"submission(s): next try in {wait:.0f}s",
                                           decision.unfit)
        self.note(q, decision)
        for _ in range(decision.submit):
            if not await self.submit(q):
                break

    def note(self, q: AllocQueue, d: policy.Decision) -> None:
        last = q.decisions[-1] if q.decisions else None
        if last is None or last[1:] != (d.submit, d.reason, d.unfit):
            q.decisions.append((time.time(), d.submit, d.reason, d.unfit))
            for watch in self.core.watches:
                watch.decided()
            log.debug("queue %d: submit %d allocation(s): %s", q.id, d.submit, d.reason)

    async def submit(self, q: AllocQueue) -> bool:
        alloc_id = f"{q.id}.{q.next_alloc}"
        q.next_alloc += 1  # the alloc_new event sets it too; this covers a failed try
        alloc_dir = self.server_dir / "autoalloc" / str(q.id) / alloc_id.split(".")[1]
        sched, transport = self.backend(q.params)
        try:
            script = write_script(q.params, q.id, alloc_id, alloc_dir, self.server_dir)
            job_id = await transport.submit(sched, script, alloc_dir)
        except HpcqueueError as e:
            log.warning("queue %d: cannot submit an allocation: %s", q.id, e)
            self.core.record({"e": "alloc_submit_failed", "queue": q.id, "error": str(e),
                              "t": time.time()})
            try:
                (alloc_dir / "submit-error").write_text(str(e) + "\n")
            except OSError:
                pass
            return False
        (alloc_dir / "job_id").write_text(job_id + "\n")
        self.core.record({"e": "alloc_new", "queue": q.id, "id": alloc_id, "job_id": job_id,
                          "dir": str(alloc_dir), "workers": q.params.workers_per_alloc,
                          "t": time.time()})
        log.info("queue %d: submitted allocation %s (%s job %s)", q.id, alloc_id,
                 q.params.scheduler, job_id)
        self.trim(q)
        return True

    def trim(self, q: AllocQueue) -> None:
        """Keep the folders of the last `keep_dirs` ended allocations."""
        ended = sorted((a for a in q.allocations.values() if not a.live),
                       key=lambda a: a.ended or 0)
        for a in ended[:max(0, len(ended) - q.params.keep_dirs)]:
            shutil.rmtree(a.dir, ignore_errors=True)

    async def cancel_all(self, q: AllocQueue) -> list[str]:
        live = q.live()
        if not live:
            return []
        sched, transport = self.backend(q.params)
        try:
            await transport.cancel(sched, [a.job_id for a in live])
        except SchedulerError as e:
            log.warning("queue %d: cancelling allocations: %s", q.id, e)
        return [a.id for a in live]
