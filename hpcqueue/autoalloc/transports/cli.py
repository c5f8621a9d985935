"""The CLI transport: sbatch/squeue/scancel (or qsub/qstat/qdel) on this machine.

Every scheduler command goes through :func:`run_command`, the one choke point
that raises :class:`SchedulerError` with the command, its exit code, stdout
and stderr.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

from hpcqueue.exceptions import SchedulerError

COMMAND_TIMEOUT = 60.0


async def run_command(argv: list[str], cwd: str | None = None,
                      timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a scheduler command; its stdout, or a SchedulerError with its own words."""
    cmd = shlex.join(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise SchedulerError(f"`{argv[0]}` not found: is the scheduler's client installed and on "
                             "PATH?", command=argv) from None
    except OSError as e:
        raise SchedulerError(f"cannot run `{cmd}`: {e.strerror}", command=argv) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise SchedulerError(f"`{cmd}` did not answer within {timeout:g}s", command=argv) \
            from None
    stdout = out.decode(errors="replace")
    stderr = err.decode(errors="replace")
    if proc.returncode != 0:
        said = " ".join((stderr.strip() or stdout.strip() or "no output").split())
        raise SchedulerError(f"`{cmd}` failed (exit code {proc.returncode}): {said}",
                             command=argv, returncode=proc.returncode, stdout=stdout,
                             stderr=stderr)
    return stdout


class CliTransport:
    name = "cli"

    def __init__(self, runner=run_command):
        self.run = runner

    async def submit(self, scheduler, script: Path, cwd: Path, hold: bool = False) -> str:
        argv = scheduler.submit_argv(script, hold)
        return scheduler.parse_submit(await self.run(argv, cwd=str(cwd)), argv)

    async def status(self, scheduler, job_ids: list[str]) -> dict:
        if not job_ids:
            return {}
        try:
            out = await self.run(scheduler.status_argv(job_ids))
        except SchedulerError as e:
            if scheduler.status_error_means_gone(e):
                return {}
            raise
        return scheduler.parse_status(out)

    async def cancel(self, scheduler, job_ids: list[str]) -> None:
        if job_ids:
            await self.run(scheduler.cancel_argv(job_ids))
