"""The pyslurm transport: submit, status and cancel through pyslurm's API.

pyslurm is compiled against one Slurm release and works only with a cluster of
the same major version.  A missing module or a
version mismatch is a clear error naming both versions, raised at `alloc add`
(during the dry run), before any queue is made.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

from hpcqueue.autoalloc.schedulers.base import RawStatus
from hpcqueue.exceptions import SchedulerError

HINT = "use --transport cli (sbatch/squeue/scancel) instead"
# The Slurm major versions that PyPI has a pyslurm release for (`pip index versions pyslurm`)
PYPI_MAJORS = ("25.11",)


def cluster_version() -> str | None:
    """The Slurm version of the cluster, from `sinfo --version`."""
    try:
        out = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.stdout)
    return m.group(1) if out.returncode == 0 and m else None


def _major(version: str | None) -> str | None:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def load_pyslurm(module=None, version=None):
    """The pyslurm module, checked against the cluster's Slurm version."""
    cluster = version if version is not None else cluster_version()
    if module is None:
        try:
            import pyslurm as module  # an optional extra
        except ImportError as e:
            raise SchedulerError(
                f"the pyslurm transport needs the `pyslurm` module, which does not import here "
                f"({e}); {install_hint(cluster)}, or {HINT}") from None
    ours = getattr(module, "__version__", None)
    if cluster and _major(ours) != _major(cluster):
        raise SchedulerError(
            f"pyslurm {ours} does not match this cluster's Slurm {cluster}: pyslurm works only "
            f"with the Slurm major version it was built for ({_major(ours)}); {HINT}")
    return module


def install_hint(cluster: str | None) -> str:
    """How to get a pyslurm that can work with a cluster of this Slurm version."""
    major = _major(cluster)
    if major in PYPI_MAJORS:
        return f"install it with `pip install 'hpcqueue[pyslurm]'` (Slurm {cluster})"
    if major is None:
        return ("pyslurm must be built for this cluster's Slurm major version, which "
                "`sinfo --version` did not tell")
    return (f"PyPI has no pyslurm for this cluster's Slurm {cluster} (only for "
            f"{', '.join(PYPI_MAJORS)}): build pyslurm from its source at the release "
            f"matching {major} (github.com/PySlurm/pyslurm)")


class PyslurmTransport:
    name = "pyslurm"

    def __init__(self, module=None, version=None):
        self._given = module
        self._version = version
        self._mod = None

    @property
    def mod(self):
        if self._mod is None:
            self._mod = load_pyslurm(self._given, self._version)
        return self._mod

    async def _call(self, what: str, fn, *args):
        mod = self.mod
        try:
            return await asyncio.to_thread(fn, *args)
        except getattr(mod, "RPCError", RuntimeError) as e:
            raise SchedulerError(f"pyslurm {what} failed: {e}") from None

    async def submit(self, scheduler, script: Path, cwd: Path, hold: bool = False) -> str:
        if scheduler.name != "slurm":
            raise SchedulerError(f"the pyslurm transport works only with slurm, not "
                                 f"{scheduler.name}")
        mod = self.mod

        def submit():
            desc = mod.JobSubmitDescription(script=str(script), working_directory=str(cwd))
            desc.load_sbatch_options()
            if hold:
                desc.priority = 0  # held, as sbatch --hold
            return desc.submit()

        return str(await self._call("submit", submit))

    async def status(self, scheduler, job_ids: list[str]) -> dict:
        if not job_ids:
            return {}
        jobs = await self._call("status", self.mod.Jobs.load)  # one RPC for every job
        out = {}
        for job_id in job_ids:
            job = jobs.get(int(job_id))
            if job is not None:
                out[job_id] = RawStatus(job.state, getattr(job, "state_reason", "") or "",
                                        getattr(job, "exit_code", None))
        return out

    async def cancel(self, scheduler, job_ids: list[str]) -> None:
        mod = self.mod
        for job_id in job_ids:
            await self._call("cancel", mod.Job(int(job_id)).cancel)
