"""What a worker learns from the batch job it runs in: the job id and its end.

Inside Slurm (``SLURM_JOB_ID``), PBS (``PBS_JOBID``) or Grid Engine
(``JOB_ID``) the worker asks the scheduler once how much time the job has
left, so it never starts a task whose
``--time-request`` would not fit.  ``HPCQUEUE_ALLOC_END`` (epoch seconds), set
by hpcqueue's own allocation scripts, saves that call.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from hpcqueue.model import parse_duration, slurm_time


def batch_job() -> tuple[str | None, str | None]:
    """(scheduler, job id) of the batch job this process runs in, if any."""
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm", os.environ["SLURM_JOB_ID"]
    if os.environ.get("PBS_JOBID"):
        return "pbs", os.environ["PBS_JOBID"]
    if os.environ.get("JOB_ID") and os.environ.get("SGE_O_WORKDIR"):
        return "sge", os.environ["JOB_ID"]
    return None, None


def _run(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def slurm_time_left(job_id: str) -> float | None:
    out = _run(["squeue", "-h", "-j", job_id, "-o", "%L"])
    if not out:
        return None
    text = out.strip().splitlines()[0].strip() if out.strip() else ""
    try:
        return float(slurm_time(text))
    except ValueError:
        return None  # UNLIMITED, NOT_SET, INVALID


def pbs_time_left(job_id: str) -> float | None:
    out = _run(["qstat", "-f", job_id])
    if not out:
        return None
    limit = used = None
    for line in out.splitlines():
        key, _, value = line.strip().partition(" = ")
        try:
            if key == "Resource_List.walltime":
                limit = parse_duration(value.strip())
            elif key == "resources_used.walltime":
                used = parse_duration(value.strip())
        except Exception:
            return None
    if limit is None:
        return None
    return limit - (used or 0)


def sge_end_time(job_id: str) -> float | None:
    """Grid Engine puts no h_rt in the job's environment: ask qstat once."""
    out = _run(["qstat", "-j", job_id, "-xml"])
    if not out:
        return None
    start = re.search(r"<JAT_start_time>(\d+)</JAT_start_time>", out)
    limit = re.search(r"<CE_name>h_rt</CE_name>\s*<CE_valtype>\d+</CE_valtype>\s*"
                      r"<CE_stringval>([^<]+)</CE_stringval>", out)
    if not (start and limit):
        return None
    try:
        return float(start.group(1)) + parse_duration(limit.group(1))
    except Exception:
        return None


def end_time() -> float | None:
    """Epoch seconds when the surrounding batch job ends, or None."""
    env = os.environ.get("HPCQUEUE_ALLOC_END")
    if env:
        try:
            return float(env)
        except ValueError:
            pass
    kind, job_id = batch_job()
    left = None
    if kind == "slurm":
        left = slurm_time_left(job_id)
    elif kind == "pbs":
        left = pbs_time_left(job_id)
    elif kind == "sge":
        return sge_end_time(job_id)
    return time.time() + left if left is not None else None
