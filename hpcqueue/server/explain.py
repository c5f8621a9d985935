"""What the server can tell of tasks it has not finished: why a waiting task does not run
(`task explain`, `job info`'s "waiting because"), and how many of those on workers have
started (progress).  Pure functions of the jobs, the workers, the queues and the time.

Why a waiting task waits, in the order it is decided (:func:`explain_task`):

0. ``dependency``: its job waits for other jobs ("waiting for job N"), or the task waits for
   tasks of its job that have not finished ("waiting for task T"): see
   :mod:`hpcqueue.deps`;
1. ``retry-delay``: it failed and waits for its ``--retry-delay`` (until ``until``);
2. ``cpus``, ``resource``, ``time-left``: no connected worker could ever run it (too few
   cpus, too little of a resource, or less time left than its ``--time-request``); each
   worker's first misfit is named.  ``no-worker``: no worker is connected at all;
3. when allocation queues exist and no connected worker fits: ``no-queue`` if none of them
   can serve it either (autoalloc's own check, :func:`hpcqueue.autoalloc.policy.misfit`),
   else ``allocation``: a queue can, and a worker will come from an allocation;
4. ``behind``: it is queued behind waiting tasks of jobs that dispatch serves first
   (higher priority, then older) and that the same workers can run;
5. ``busy``: the workers that could run it have no room now;
6. ``dispatching``: a worker has room for it; the next dispatch round hands it out.

Started or only assigned (:func:`started_counts`): a worker may hold more tasks than it
has cpus (prefetch, for short tasks: see :mod:`hpcqueue.server.dispatch`), and those extra
tasks wait on the worker.  The worker does not say when a task starts, so the server
counts a task as started when its worker has room for it: per worker, the cpus it holds
beyond its own (``used_cpus - cpus``) are tasks assigned but not started.  Only jobs that
are prefetched can have such tasks; when several share the workers, the extra cpus are
split among them in proportion to the cpus their tasks on workers hold.  O(workers + jobs)
per call, never O(tasks).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from hpcqueue.autoalloc import policy
from hpcqueue.jobs import Job
from hpcqueue.model import CANCELED, STATE_CODES, WAITING, format_duration
from hpcqueue.server.dispatch import prefetch, room_for
from hpcqueue.state import WorkerRecord

#: the reasons a waiting task can be given, in the order they are decided
REASONS = ("dependency", "retry-delay", "cpus", "resource", "time-left", "no-worker", "no-queue",
           "allocation", "behind", "busy", "dispatching")
#: reasons that mean the task cannot run until something changes (`job info` shows them)
CANNOT_RUN = frozenset({"dependency", "retry-delay", "cpus", "resource", "time-left", "no-worker",
                        "no-queue"})


@dataclass
class Explanation:
    state: str  # the task's state
    reason: str | None  # one of REASONS, or None when the task does not wait
    message: str
    details: list[str] = field(default_factory=list)
    until: float | None = None  # retry-delay: the server time it may run again
    ahead: int | None = None  # behind: waiting tasks of jobs served first

    def to_dict(self) -> dict:
        return {"state": self.state, "reason": self.reason, "message": self.message,
                "details": self.details, "until": self.until, "ahead": self.ahead}


def worker_misfit(job: Job, w: WorkerRecord, now: float) -> tuple[str, str] | None:
    """(reason, text) of why worker W can never run a task of JOB, or None if it can (the
    checks of :func:`hpcqueue.server.dispatch.fits_worker`, each named)."""
    if job.cpus > w.cpus:
        return "cpus", f"worker {w.id} has {w.cpus} cpus, a task needs {job.cpus}"
    for name, count in sorted(job.res.items()):
        have = w.res.get(name, 0)
        if count > have:
            return "resource", f"worker {w.id} has {name}={have}, a task needs {name}={count}"
    if job.time_request and w.deadline is not None and w.deadline - now < job.time_request:
        left = format_duration(max(0.0, w.deadline - now))
        return "time-left", (f"worker {w.id} has {left} left, a task asks --time-request "
                             f"{format_duration(job.time_request)}")
    return None


def demand(job: Job) -> policy.Demand:
    """JOB's waiting tasks as autoalloc's policy sees them (as its service builds them)."""
    return policy.Demand(job=job.id, count=max(1, job.waiting), cpus=job.cpus,
                         gpus=job.res.get("gpus", 0), time_request=job.time_request,
                         other=tuple(sorted(k for k, v in job.res.items()
                                            if k != "gpus" and v > 0)))


def queue_misfits(job: Job, queues: list[tuple[str, policy.Limits]]) -> tuple[list, list]:
    """(names of the queues that can serve JOB, texts of why each other one cannot)."""
    d = demand(job)
    fit, unfit = [], []
    for name, limits in queues:
        why = policy.misfit(d, limits)
        if why is None:
            fit.append(name)
        else:
            unfit.append(f"queue {name}: {why}")
    return fit, unfit


def placement(job: Job, workers: list[WorkerRecord], queues: list[tuple[str, policy.Limits]],
              now: float) -> Explanation | None:
    """Why no task of JOB can be placed on a worker, or None if some connected worker can
    run its tasks (the reasons ``cpus`` .. ``allocation``)."""
    misfits = [(w, worker_misfit(job, w, now)) for w in workers]
    if any(m is None for _, m in misfits):
        return None
    details = [text for _, (_, text) in misfits]
    if workers:
        kinds = sorted({r for _, (r, _) in misfits}, key=REASONS.index)
        reason = kinds[0]  # each worker's own misfit is in the details
        what = {"cpus": f"{job.cpus} cpus", "time-left": "the time left its --time-request "
                f"asks ({format_duration(job.time_request)})",
                "resource": ", ".join(f"{k}={v}" for k, v in sorted(job.res.items()))}
        message = (f"no connected worker has {' or '.join(what[k] for k in kinds)} "
                   f"({len(workers)} worker(s) connected)")
    else:
        reason, message = "no-worker", "no worker is connected"
    if queues:
        fit, unfit = queue_misfits(job, queues)
        if fit:
            return Explanation("waiting", "allocation",
                               f"{message}; allocation queue {', '.join(fit)} can serve it: "
                               "it waits for a worker from an allocation", details + unfit)
        return Explanation("waiting", "no-queue",
                           f"{message}, and no allocation queue can serve it",
                           details + unfit)
    return Explanation("waiting", reason, message, details)


def ahead_of(job: Job, ready: list[Job], fitting: list[WorkerRecord],
             now: float) -> tuple[int, int]:
    """(waiting tasks of jobs that dispatch serves before JOB, how many jobs those are):
    READY is the server's jobs in dispatch order (priority, then age); only jobs that one of
    the workers FITTING (those that can run JOB) can run count: the others take no turn."""
    tasks = jobs = 0
    for other in ready:
        if other is job or (-other.priority, other.id) > (-job.priority, job.id):
            break
        if other.available > 0 and any(worker_misfit(other, w, now) is None
                                       for w in fitting):
            tasks += other.available
            jobs += 1
    return tasks, jobs


def explain_task(job: Job, index: int, workers: list[WorkerRecord],
                 queues: list[tuple[str, policy.Limits]], ready: list[Job],
                 now: float) -> Explanation:
    """Why task INDEX of JOB is not running.  WORKERS: the connected workers; QUEUES: the
    active allocation queues as (name, limits); READY: the jobs in dispatch order."""
    code = job.task_state(index)
    state = STATE_CODES[code].value
    if code != WAITING:
        why = job.errors.get(index) or job.reason if code == CANCELED else None
        if why:  # e.g. canceled by a dependency that failed
            return Explanation(state, None, f"the task is {state}, not waiting: {why}")
        return Explanation(state, None, f"the task is {state}, not waiting")
    waits = dependency(job, index)
    if waits is not None:
        return waits
    return _explain_waiting(job, job.retry_at.get(index), workers, queues, ready, now)


def dependency(job: Job, index: int | None = None) -> Explanation | None:
    """Why JOB (or its task INDEX) waits for a dependency, or None if it does not."""
    if job.waiting_on:
        ids = sorted(job.waiting_on)
        which = (f"job {ids[0]}" if len(ids) == 1
                 else "jobs " + ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10
                                                                else ""))
        how = ("to end" if job.spec.get("after_any")
               else "to end with every task finished")
        return Explanation("waiting", "dependency", f"waiting for {which} {how}",
                           [f"it depends on job(s) {', '.join(map(str, job.spec['after']))}"])
    if index is None:  # the job: when none of its waiting tasks may run, as for the first
        if not job.unmet or job.available > 0:
            return None
        index = next(iter(job.unmet))
    before = job.blocked_by(index)
    if not before:
        return None
    which = f"task {before[0]}" if len(before) == 1 else \
        "tasks " + ", ".join(map(str, before[:10])) + (", ..." if len(before) > 10 else "")
    return Explanation("waiting", "dependency",
                       f"waiting for {which} (of this job) to finish")


def explain_job(job: Job, workers: list[WorkerRecord],
                queues: list[tuple[str, policy.Limits]], ready: list[Job],
                now: float) -> Explanation | None:
    """Why the waiting tasks of JOB do not run (as for its next task), or None if it has
    none waiting.  When all of them wait for a retry delay, it is the earliest one's."""
    if job.waiting <= 0 or job.canceled:
        return None
    waits = dependency(job)
    if waits is not None:
        return waits
    until = min(job.retry_at.values()) if job.available <= 0 and job.retry_at else None
    return _explain_waiting(job, until, workers, queues, ready, now)


def _explain_waiting(job, until, workers, queues, ready, now) -> Explanation:
    if until is not None:
        left = format_duration(max(0.0, until - now))
        when = time.strftime("%H:%M:%S", time.localtime(until))
        out = Explanation("waiting", "retry-delay",
                          f"it failed and waits for its retry delay: it may run again at "
                          f"{when} (in {left})", until=until)
        placed = placement(job, workers, queues, now)
        if placed is not None:
            out.details.append(f"and then: {placed.message}")
        return out
    placed = placement(job, workers, queues, now)
    if placed is not None:
        return placed
    fitting = [w for w in workers if worker_misfit(job, w, now) is None]
    tasks, jobs = ahead_of(job, ready, fitting, now)
    if tasks:
        return Explanation(
            "waiting", "behind",
            f"it is queued behind {tasks} waiting task(s) of {jobs} job(s) served first "
            "(higher priority, or older)", [_room(fitting, job)], ahead=tasks)
    if not any(room_for(job, w, prefetching=False) > 0 for w in fitting):
        return Explanation("waiting", "busy",
                           f"the {len(fitting)} worker(s) that can run it are busy",
                           [_room(fitting, job)], ahead=0)
    return Explanation("waiting", "dispatching",
                       "a worker has room for it: the next dispatch round hands it out",
                       [_room(fitting, job)], ahead=0)


def _room(fitting: list[WorkerRecord], job: Job) -> str:
    used = sum(min(w.used_cpus, w.cpus) for w in fitting)
    total = sum(w.cpus for w in fitting)
    return (f"{len(fitting)} worker(s) can run it; {used} of their {total} cpus are in use, "
            f"a task needs {job.cpus}")


# ------------------------------------------------------------------ progress

def started_counts(jobs: list[Job], workers: list[WorkerRecord]) -> dict[int, int]:
    """Job id -> how many of its tasks on workers are assigned but not started (see the
    module's docstring).  JOBS: every job with tasks on workers; a job not in the result
    has all of its tasks on workers started."""
    extra = sum(max(0, w.used_cpus - w.cpus) for w in workers)
    if not extra:
        return {}
    held = {j.id: j.running * j.cpus for j in jobs if j.running and prefetch(j)}
    total = sum(held.values())
    if not total:
        return {}
    by_job = {j.id: j for j in jobs}
    out = {}
    for jid, cpus in held.items():
        job = by_job[jid]
        share = extra * cpus / total
        out[jid] = min(job.running, math.ceil(share / job.cpus - 1e-9))
    return out
