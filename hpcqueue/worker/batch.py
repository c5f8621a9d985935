"""What a worker learns from the batch job it runs in: the job id and its end.

Each scheduler class says how to recognise its batch jobs and how to read the time they
have left (see :mod:`hpcqueue.autoalloc.backends`): inside Slurm (``SLURM_JOB_ID``), PBS
(``PBS_JOBID``) or Grid Engine (``JOB_ID``) the worker asks the scheduler once how much time
the job has left, so it never starts a task whose ``--time-request`` would not fit.
``HPCQUEUE_ALLOC_END`` (epoch seconds), set by hpcqueue's own allocation scripts, saves that
call.  Finding the batch job imports the scheduler classes only (the standard library), not
the rendering of scripts.
"""

from __future__ import annotations

import os


def batch_job() -> tuple[str | None, str | None]:
    """(scheduler, job id) of the batch job this process runs in, if any."""
    from hpcqueue.autoalloc import backends

    return backends.batch_job(os.environ)


def end_time() -> float | None:
    """Epoch seconds when the surrounding batch job ends, or None."""
    from hpcqueue.autoalloc import backends

    env = os.environ.get("HPCQUEUE_ALLOC_END")
    if env:
        try:
            return float(env)
        except ValueError:
            pass
    kind, job_id = batch_job()
    if kind is None:
        return None
    return backends.scheduler_class(kind).end_time(job_id)
