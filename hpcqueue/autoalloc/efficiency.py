"""`alloc efficiency`: core-hours allocated against core-hours the tasks used, per allocation
and per queue.  Pure functions of the allocation book's figures and the time.

- **allocated**: from the allocation's start to its end (the scheduler's own times where its
  status gives them, else when the server saw it run, or its first worker connect, and
  end), times its cpus: the cpus its workers reported
  (the most of any) times the workers it was submitted for; without a worker, the queue's
  `--cpus`, else unknown.  A running allocation counts up to now.
- **used**: the run times of the tasks its workers ran (each times the task's cpus), summed
  as results came in (:meth:`~hpcqueue.autoalloc.book.Allocation.task_ran`).
- **idle before / after**: from its start to its first task's start, and from its last
  task's end to its end (to now while it runs); all of it when no task ran.
- **fraction used**: used ÷ allocated.
"""

from __future__ import annotations

from hpcqueue.autoalloc.book import Allocation, AllocQueue

HOUR = 3600.0


def allocation_figures(a: Allocation, queue_cpus: int | None, now: float) -> dict:
    cpus = a.worker_cpus * a.expected if a.worker_cpus else (
        queue_cpus * a.expected if queue_cpus else None)
    start = a.started
    end = a.ended if a.ended is not None else now
    wall = max(0.0, end - start) if start is not None else 0.0
    allocated = wall * cpus if cpus is not None else None
    if start is None:
        before = after = 0.0
    elif a.first_task is None:
        before, after = wall, 0.0
    else:
        before = min(wall, max(0.0, a.first_task - start))
        after = min(wall, max(0.0, end - a.last_task))
    return {
        "id": a.id, "queue": a.queue, "job_id": a.job_id, "state": a.state.value,
        "started": start, "ended": a.ended, "cpus": cpus, "wall_seconds": wall,
        "core_hours_allocated": None if allocated is None else allocated / HOUR,
        "core_hours_used": a.used / HOUR,
        "idle_before": before, "idle_after": after,
        "fraction_used": a.used / allocated if allocated else None,
    }


def queue_figures(q: AllocQueue, now: float) -> dict:
    """A queue's allocations' figures, and their sums."""
    allocs = [allocation_figures(a, q.params.cpus, now) for a in q.allocations.values()]
    known = [x for x in allocs if x["core_hours_allocated"] is not None]
    allocated = sum(x["core_hours_allocated"] for x in known)
    used = sum(x["core_hours_used"] for x in allocs)
    return {
        "queue": q.id, "name": q.params.name, "state": q.state.value,
        "allocations": allocs,
        "core_hours_allocated": allocated, "core_hours_used": used,
        "idle_before": sum(x["idle_before"] for x in allocs),
        "idle_after": sum(x["idle_after"] for x in allocs),
        "fraction_used": used / allocated if allocated else None,
        # allocations whose cpus nobody knows: left out of the allocated sum
        "unknown_cpus": len(allocs) - len(known),
    }
