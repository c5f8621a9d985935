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

Two policies (``server start --dispatch``), both pure functions of the jobs, the
workers and the time, in ``POLICIES``:

- ``first-free`` (:func:`plan`, the default): each worker, least loaded first, is
  filled up to its free slots plus prefetch.
- ``round-robin`` (:func:`plan_round_robin`): tasks are handed out one at a time,
  each to the worker that has had the fewest tasks in total (finished plus
  running, over all jobs) among those with a free slot; no prefetch.  Over a run,
  workers alike get shares alike.

Delayed retries (``--retry-delay``) are waiting but not handed out: a job offers
``job.available`` tasks.
"""

from __future__ import annotations

from heapq import heappop, heappush

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


def room_for(job: Job, w: WorkerRecord, prefetching: bool = True) -> int:
    """How many more tasks of `job` the worker can take now (with prefetch, or free slots
    only)."""
    factor = 1 + prefetch(job) if prefetching else 1
    k = (w.cpus * factor - w.used_cpus) // job.cpus if job.cpus else MAX_BATCH
    for name, count in job.res.items():
        if count:
            k = min(k, (w.res[name] * factor - w.used_res.get(name, 0)) // count)
    return max(0, k)


def plan(jobs: list[Job], workers: list[WorkerRecord], now: float,
         limit: int | None = None) -> list[tuple]:
    """Assignments for this round: [(worker, [job, [index, ...], ...]), ...], at most LIMIT
    tasks in all (None: no limit).

    Takes the tasks out of the jobs' waiting queues; the caller records a
    ``start`` event for each assignment (which marks them running).
    """
    if not jobs or not workers:
        return []
    left = limit if limit is not None else float("inf")
    out = []
    # (job id, index) handed out this round: after a restart an index can sit twice in a job's
    # queue (replay re-queues what it was handed back, but never sees the take of a start), and
    # `take` then hands it out once per worker; `Job.take` drops such a twin only within a call
    taken: set[tuple[int, int]] = set()
    # least loaded first, so that a round spreads tasks over idle workers
    for w in sorted(workers, key=lambda w: w.used_cpus / (w.cpus or 1)):
        if left <= 0:
            break
        picked: list = []
        budget = first_budget = min(MAX_BATCH, left)
        cpus = w.used_cpus
        used_res = dict(w.used_res)
        for job in jobs:
            if job.available <= 0 or not fits_worker(job, w, now):
                continue
            k = min(room_for(job, w), budget, job.available)
            if k <= 0:
                continue
            from_queue = bool(job.requeued)  # only re-queued indexes can have a twin
            idxs = job.take(k)
            if from_queue:
                jid = job.id
                idxs = [i for i in idxs if (jid, i) not in taken]
                taken.update((jid, i) for i in idxs)
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
            left -= first_budget - budget
    return out


def plan_round_robin(jobs: list[Job], workers: list[WorkerRecord], now: float,
                     limit: int | None = None) -> list[tuple]:
    """Assignments as :func:`plan` makes them, spread evenly: one task at a time goes to the
    worker with the fewest tasks so far (``finished`` + running; ties: the lower id) that has
    a free slot for a job, jobs in priority order; no prefetch; at most LIMIT tasks in all.

    A heap of the workers still in the round: O(log workers) per task handed out, and each
    job that a worker cannot take is passed over once per round, not once per task."""
    if not jobs or not workers:
        return []
    saved = [(w.used_cpus, dict(w.used_res)) for w in workers]
    left = [job.available for job in jobs]  # what each job can still hand out this round
    first = [0] * len(workers)  # per worker: the first job that may still have a task for it
    given = [0] * len(workers)
    taken: set[tuple[int, int]] = set()  # (job id, index) handed out this round
    picks: list[dict[int, list[int]]] = [{} for _ in workers]  # job id -> indexes
    order: list[int] = []  # workers in the order they got their first task
    heap = sorted((w.finished + len(w.tasks), w.id, n) for n, w in enumerate(workers))
    left_in_round = limit if limit is not None else float("inf")
    while heap and left_in_round > 0:
        count, wid, n = heappop(heap)
        w = workers[n]
        k = first[n]
        while k < len(jobs) and not (left[k] > 0 and fits_worker(jobs[k], w, now)
                                     and room_for(jobs[k], w, prefetching=False) > 0):
            k += 1
        first[n] = k
        if k == len(jobs):
            continue  # nothing more fits this worker this round: it leaves the heap
        job = jobs[k]
        idxs = job.take(1)
        if not idxs:  # nothing to take after all
            left[k] = 0
            heappush(heap, (count, wid, n))
            continue
        if (job.id, idxs[0]) in taken:  # a second entry that replay left in its queue
            heappush(heap, (count, wid, n))
            continue
        taken.add((job.id, idxs[0]))
        left[k] -= 1
        left_in_round -= 1
        if not picks[n]:
            order.append(n)
        picks[n].setdefault(job.id, []).extend(idxs)
        w.used_cpus += job.cpus
        for name, c in job.res.items():
            w.used_res[name] = w.used_res.get(name, 0) + c
        given[n] += 1
        if given[n] < MAX_BATCH:
            heappush(heap, (count + 1, wid, n))
    # the start events re-apply these counts: restore the originals
    for w, (cpus, res) in zip(workers, saved):
        w.used_cpus, w.used_res = cpus, res
    out = []
    for n in order:
        picked: list = []
        for job_id, idxs in picks[n].items():
            picked += (job_id, idxs)
        out.append((workers[n], picked))
    return out


#: the policies of `server start --dispatch`
POLICIES = {"first-free": plan, "round-robin": plan_round_robin}
