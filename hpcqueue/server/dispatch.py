"""Which waiting tasks go to which worker: one pure decision per round.

Jobs are served by priority (high first), then by age.  A worker gets a task
only if the job's cpus and resources fit the worker at all, its free capacity
now, and the job's ``--time-request`` fits the time the worker has left.

Prefetch: for a job whose tasks have proved short (mean run time under
``PREFETCH_BELOW`` seconds), a worker may hold extra tasks per cpu, about
``PREFETCH_WINDOW`` seconds of work (at least one, at most ``PREFETCH_MAX``),
so that the next task is already there when one ends and tasks travel in
batches.  Long tasks are never prefetched: a task queued behind a long one
could wait while another worker sits idle.
"""

from __future__ import annotations

from hpcqueue.jobs import Job
from hpcqueue.state import WorkerRecord

PREFETCH_BELOW = 0.5  # seconds of mean task run time
PREFETCH_WINDOW = 0.1  # seconds of queued work per cpu a worker may hold
PREFETCH_MAX = 64  # queued tasks per cpu
MAX_BATCH = 4096  # tasks per worker per round


def prefetch(job: Job) -> int:
    """Extra tasks per cpu a worker may hold for this job."""
    mean = job.mean_runtime
    if mean is None or mean >= PREFETCH_BELOW:
        return 0
    return max(1, min(PREFETCH_MAX, int(PREFETCH_WINDOW / max(mean, 1e-6))))


def fits_worker(job: Job, w: WorkerRecord, now: float) -> bool:
    """Could this worker ever run a task of this job (ignoring what it runs now)?"""
    if job.cpus > w.cpus:
        return False
    for name, count in job.res.items():
        if count > w.res.get(name, 0):
            return False
    if job.time_request and w.deadline is not None and w.deadline - now < job.time_request:
        return False
    return True


def room_for(job: Job, w: WorkerRecord) -> int:
    """How many more tasks of `job` the worker can take now."""
    factor = 1 + prefetch(job)
    k = (w.cpus * factor - w.used_cpus) // job.cpus if job.cpus else MAX_BATCH
    for name, count in job.res.items():
        if count:
            k = min(k, (w.res[name] * factor - w.used_res.get(name, 0)) // count)
    return max(0, k)


def plan(jobs: list[Job], workers: list[WorkerRecord], now: float) -> list[tuple]:
    """Assignments for this round: [(worker, [job, [index, ...], ...]), ...].

    Takes the tasks out of the jobs' waiting queues; the caller records a
    ``start`` event for each assignment (which marks them running).
    """
    if not jobs or not workers:
        return []
    out = []
    # least loaded first, so that a round spreads tasks over idle workers
    for w in sorted(workers, key=lambda w: w.used_cpus / (w.cpus or 1)):
        picked: list = []
        budget = MAX_BATCH
        cpus = w.used_cpus
        used_res = dict(w.used_res)
        for job in jobs:
            if job.available <= 0 or not fits_worker(job, w, now):
                continue
            k = min(room_for(job, w), budget, job.available)
            if k <= 0:
                continue
            idxs = job.take(k)
            if not idxs:
                continue
            picked += (job.id, idxs)
            budget -= len(idxs)
            # keep the worker's counters current for the next job of this round
            w.used_cpus += job.cpus * len(idxs)
            for name, count in job.res.items():
                w.used_res[name] = w.used_res.get(name, 0) + count * len(idxs)
            if budget <= 0:
                break
        # the start event re-applies these counts: restore the originals first
        w.used_cpus = cpus
        w.used_res = used_res
        if picked:
            out.append((w, picked))
    return out
