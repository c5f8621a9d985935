"""How many allocations to submit now: one pure function, tested on its own.

Inputs are plain values: the waiting tasks (grouped by what each task asks
for), what the queue already has in flight, and the queue's limits.  The
output is a count and a reason that `alloc explain` shows.

Two ways to size a queue:

- by task count (the default): enough workers that every waiting task could
  run at once, within the backlog and --max-worker-count;
- by throughput (``Limits.target_drain``, `alloc add --target-drain DUR`):
  enough workers that the waiting tasks' work is done within DUR.  A job's
  tasks take its observed mean run time (``Demand.mean_runtime``); before any
  has ended, its --time-request (an upper bound, so the guess errs on more
  workers); with neither, one worker runs the first tasks and measures them.
  Never more workers than the count sizing asks for: a worker per runnable
  task at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hpcqueue.model import format_duration


@dataclass(frozen=True)
class Demand:
    """Waiting tasks of one job: how many, and what each one asks for."""

    job: int
    count: int
    cpus: int = 1
    gpus: int = 0
    time_request: float = 0.0
    other: tuple = ()  # names of other resources the tasks need
    mean_runtime: float | None = None  # observed seconds per task; None: none has ended


@dataclass(frozen=True)
class Limits:
    time_limit: float
    backlog: int = 1
    workers_per_alloc: int = 1
    max_worker_count: int | None = None
    cpus: int | None = None  # per worker; None: whatever the allocation gives
    gpus: int | None = None
    target_drain: float | None = None  # seconds; None: size by task count


@dataclass(frozen=True)
class InFlight:
    queued_allocs: int = 0      # waiting in the scheduler's queue
    running_allocs: int = 0     # running batch jobs
    booting_workers: int = 0    # expected from running allocations, not yet connected
    live_workers: int = 0       # connected workers of running allocations


@dataclass
class Decision:
    submit: int
    reason: str
    unfit: list = field(default_factory=list)  # why some waiting tasks do not fit


def misfit(d: Demand, q: Limits) -> str | None:
    """Why tasks of this kind can never run on this queue's workers, or None."""
    if d.time_request and d.time_request > q.time_limit:
        return (f"job {d.job} asks --time-request {format_duration(d.time_request)}, more than "
                f"the queue's --time-limit {format_duration(q.time_limit)}")
    if q.cpus is not None and d.cpus > q.cpus:
        return f"job {d.job} asks {d.cpus} cpus per task, the queue's workers have {q.cpus}"
    if d.gpus and d.gpus > (q.gpus or 0):
        return f"job {d.job} asks {d.gpus} gpus per task, the queue's workers have {q.gpus or 0}"
    if d.other:
        return f"job {d.job} asks for {', '.join(d.other)}, which the queue's workers lack"
    return None


def tasks_per_worker(d: Demand, q: Limits) -> int:
    """How many tasks of this kind one of the queue's workers runs at once."""
    per_worker = max(1, q.cpus // d.cpus) if q.cpus else 1
    if d.gpus and q.gpus:
        per_worker = min(per_worker, q.gpus // d.gpus)
    return per_worker


def seconds(value: float) -> str:
    """A run time for the arithmetic of a reason: 0.2s, 12s, 1h00m00s."""
    return f"{value:.2g}s" if value < 10 else format_duration(value)


def runtime_of(d: Demand) -> tuple[float | None, str]:
    """The run time the throughput sizing assumes for one task of D, and where it is from."""
    if d.mean_runtime is not None:
        return d.mean_runtime, "observed"
    if d.time_request:
        return d.time_request, "--time-request, none ended yet"
    return None, ""


def drain_workers(fitting: list[tuple[Demand, int]], drain: float) -> tuple[int, str]:
    """(workers, the arithmetic) that run the waiting tasks of FITTING, each as (demand,
    tasks per worker), within DRAIN seconds: at least one worker while tasks wait."""
    terms, load, unknown = [], 0.0, False
    for d, per_worker in fitting:
        label = f"job {d.job}: " if len(fitting) > 1 else ""
        runtime, source = runtime_of(d)
        if runtime is None:
            unknown = True
            terms.append(f"{label}{d.count} task(s) with no run time yet (none ended, no "
                         "--time-request): 1 worker runs the first ones to measure them")
            continue
        share = d.count * runtime / per_worker / drain
        load += share
        per = f" ÷ {per_worker} per worker" if per_worker > 1 else ""
        terms.append(f"{label}{d.count} task(s) × {seconds(runtime)} ({source}){per} ÷ "
                     f"{seconds(drain)} = {share:.3g} worker(s)")
    workers = max(1, math.ceil(load - 1e-9))
    text = " + ".join(terms)
    if len(terms) > 1 or (not unknown and abs(load - workers) > 1e-9):
        text += f" → {workers} worker(s)"
    return workers, text


def decide(demand: list[Demand], q: Limits, flight: InFlight) -> Decision:
    unfit = []
    fitting = []
    workers_needed = 0.0
    waiting = 0
    for d in demand:
        why = misfit(d, q)
        if why is not None:
            unfit.append(f"{d.count} waiting task(s) cannot run here: {why}")
            continue
        per_worker = tasks_per_worker(d, q)
        fitting.append((d, per_worker))
        workers_needed += d.count / per_worker
        waiting += d.count
    if waiting == 0:
        reason = "no waiting tasks fit this queue" if unfit else "no waiting tasks"
        return Decision(0, reason, unfit)
    wpa = q.workers_per_alloc
    coming = flight.queued_allocs * wpa + flight.booting_workers
    missing = math.ceil(workers_needed) - coming
    head = f"{waiting} waiting task(s)"
    if q.target_drain is not None:
        # the waiting tasks' work, spread over every worker the queue has or has coming,
        # and never more new workers than the count sizing asks for
        wanted, sums = drain_workers(fitting, q.target_drain)
        have = flight.live_workers + coming
        head = f"--target-drain {seconds(q.target_drain)}: {sums}"
        if wanted - have <= missing:
            missing = wanted - have
            if have:
                head += f"; {have} worker(s) running or on their way"
        else:
            head += (f"; capped at {math.ceil(workers_needed)} worker(s) for {waiting} "
                     "runnable task(s)" + (f", {coming} on their way" if coming else ""))
        if missing <= 0:
            return Decision(0, f"{head}: no more needed", unfit)
        need = f"{head}: {missing} more worker(s)"
    else:
        if missing <= 0:
            return Decision(0, f"{waiting} waiting task(s) are covered by {coming} worker(s) "
                               "already on their way", unfit)
        need = f"{waiting} waiting task(s) need {missing} more worker(s)"
    want = math.ceil(missing / wpa)
    room_backlog = q.backlog - flight.queued_allocs
    if room_backlog <= 0:
        return Decision(0, f"{head}, but the backlog is full "
                           f"({flight.queued_allocs} allocation(s) queued, --backlog "
                           f"{q.backlog})", unfit)
    submit = min(want, room_backlog)
    if q.max_worker_count is not None:
        have = (flight.queued_allocs + flight.running_allocs) * wpa
        room_workers = (q.max_worker_count - have) // wpa
        if room_workers <= 0:
            return Decision(0, f"{head}, but the queue has "
                               f"{have} worker(s), the --max-worker-count", unfit)
        submit = min(submit, room_workers)
    return Decision(submit, f"{need}: submit {submit} allocation(s)", unfit)
