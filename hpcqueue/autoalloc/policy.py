"""How many allocations to submit now: one pure function, tested on its own.

Inputs are plain values: the waiting tasks (grouped by what each task asks
for), what the queue already has in flight, and the queue's limits.  The
output is a count and a reason that `alloc explain` shows.
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


@dataclass(frozen=True)
class Limits:
    time_limit: float
    backlog: int = 1
    workers_per_alloc: int = 1
    max_worker_count: int | None = None
    cpus: int | None = None  # per worker; None: whatever the allocation gives
    gpus: int | None = None


@dataclass(frozen=True)
class InFlight:
    queued_allocs: int = 0      # waiting in the scheduler's queue
    running_allocs: int = 0     # running batch jobs
    booting_workers: int = 0    # expected from running allocations, not yet connected


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


def decide(demand: list[Demand], q: Limits, flight: InFlight) -> Decision:
    unfit = []
    workers_needed = 0.0
    waiting = 0
    for d in demand:
        why = misfit(d, q)
        if why is not None:
            unfit.append(f"{d.count} waiting task(s) cannot run here: {why}")
            continue
        per_worker = max(1, q.cpus // d.cpus) if q.cpus else 1
        if d.gpus and q.gpus:
            per_worker = min(per_worker, q.gpus // d.gpus)
        workers_needed += d.count / per_worker
        waiting += d.count
    if waiting == 0:
        reason = "no waiting tasks fit this queue" if unfit else "no waiting tasks"
        return Decision(0, reason, unfit)
    wpa = q.workers_per_alloc
    coming = flight.queued_allocs * wpa + flight.booting_workers
    missing = math.ceil(workers_needed) - coming
    if missing <= 0:
        return Decision(0, f"{waiting} waiting task(s) are covered by {coming} worker(s) "
                           "already on their way", unfit)
    want = math.ceil(missing / wpa)
    room_backlog = q.backlog - flight.queued_allocs
    if room_backlog <= 0:
        return Decision(0, f"{waiting} waiting task(s), but the backlog is full "
                           f"({flight.queued_allocs} allocation(s) queued, --backlog "
                           f"{q.backlog})", unfit)
    submit = min(want, room_backlog)
    if q.max_worker_count is not None:
        have = (flight.queued_allocs + flight.running_allocs) * wpa
        room_workers = (q.max_worker_count - have) // wpa
        if room_workers <= 0:
            return Decision(0, f"{waiting} waiting task(s), but the queue has "
                               f"{have} worker(s), the --max-worker-count", unfit)
        submit = min(submit, room_workers)
    return Decision(submit, f"{waiting} waiting task(s) need {missing} more worker(s): "
                            f"submit {submit} allocation(s)", unfit)
