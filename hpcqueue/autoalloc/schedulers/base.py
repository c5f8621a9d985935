"""The generic scheduler: what a scheduler declares about itself, the script context and
the CLI dialect's hooks.

A scheduler is its class (see :mod:`hpcqueue.autoalloc.backends`, which finds them).  A
subclass declares its name, its template, the transports that can deliver its scripts, its
DRMAA native specification, how a worker recognises the batch job it runs in and how it reads
the time that job has left; and it supplies its submit/status/cancel commands, how to read
their output, and how its job states map onto ours.

This module is imported by a starting worker (to find its batch job): keep it to the
standard library, with nothing heavy at import time.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hpcqueue.autoalloc.model import AllocState, EndReason, QueueParams
from hpcqueue.exceptions import SchedulerError


@dataclass
class RawStatus:
    """A job as the scheduler reports it."""

    word: str            # the scheduler's own state word, e.g. RUNNING, Q, COMPLETED
    reason: str = ""
    exit_code: int | None = None
    #: set by transports that speak for every scheduler (DRMAA): queued, running or ended
    phase: str | None = None
    aborted: bool = False  # ended by a cancel (DRMAA's wasAborted)
    #: when the job started and ended, by the scheduler's clock, where its status says so
    #: (seconds since the epoch; `alloc efficiency` counts from them)
    started: float | None = None
    ended: float | None = None


def hms(seconds: float) -> str:
    s = max(60, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def worker_command(params: QueueParams) -> str:
    """The shell command an allocation runs to start one worker."""
    argv = [sys.executable, "-m", "hpcqueue", "worker", "start", "--on-server-lost", "reconnect",
            "--idle-timeout", f"{params.idle_timeout:g}s"]
    if params.cpus:
        argv += ["--cpus", str(params.cpus)]
    if params.gpus:
        argv += ["--resource", f"gpus={params.gpus}"]
    if params.server_host:
        argv += ["--server-host", params.server_host]
    return shlex.join(argv)


def run_quietly(argv: list[str], timeout: float = 15.0) -> str | None:
    """The stdout of a short query command, or None if it failed (for the time-left hooks:
    a worker that cannot ask simply does not know its end)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


class Scheduler:
    #: the name users give: `alloc add NAME`, `scheduler: NAME` in a profile; a class without
    #: one (this base) is not registered
    name = ""
    #: the packaged template (templates/), or one beside the scheduler's module
    template = "generic.sh.j2"
    #: the transports that can deliver its scripts (`--transport`); the first is the default
    transports: tuple = ("cli", "ssh")
    #: DRMAA's nativeSpecification that makes the DRM read the script's own directives
    drmaa_native_spec = ""
    #: environment variables that are all set inside one of its batch jobs; the first holds
    #: the job id (empty: a worker never recognises one)
    batch_env: tuple = ()
    #: the order in which a worker tries the schedulers to recognise its batch job (lower
    #: first), for environments that look like several
    batch_rank = 100
    #: state words meaning the job waits in the queue / runs
    queued_words: frozenset = frozenset()
    running_words: frozenset = frozenset()
    #: commands whose `--version` is checked before a dry run (autoalloc/identify.py): those
    #: that other schedulers name alike
    cli_commands: tuple = ()

    def time(self, seconds: float) -> str:
        return hms(seconds)

    # ------------------------------------------------------------- inside a batch job

    @classmethod
    def batch_job(cls, env) -> str | None:
        """The id of the batch job whose environment ENV is, if it is one of ours."""
        if cls.batch_env and all(env.get(name) for name in cls.batch_env):
            return env[cls.batch_env[0]]
        return None

    @classmethod
    def end_time(cls, job_id: str) -> float | None:
        """Epoch seconds when batch job JOB_ID ends, asked once at worker start; None: not
        known."""
        return None

    def deliver_with(self, transport: str) -> str:
        """The transport that delivers its scripts when TRANSPORT is chosen."""
        return transport

    def template_dirs(self) -> list[Path]:
        """Where its template may be besides the packaged ones: beside its module (a
        scheduler added outside hpcqueue's tree brings its template along)."""
        module = sys.modules.get(type(self).__module__)
        path = getattr(module, "__file__", None)
        return [Path(path).resolve().parent] if path else []

    def context(self, params: QueueParams, queue_id: int, alloc_id: str, alloc_dir: Path,
                server_dir: Path) -> dict:
        return {
            "name": f"hpcq-{queue_id}-{alloc_id.split('.')[-1]}",
            "queue_id": queue_id,
            "alloc_id": alloc_id,
            "alloc_dir": str(alloc_dir),
            "server_dir": str(server_dir),
            "stdout": str(alloc_dir / "stdout"),
            "stderr": str(alloc_dir / "stderr"),
            "time_limit": self.time(params.time_limit),
            "time_limit_seconds": int(params.time_limit),
            "workers_per_alloc": params.workers_per_alloc,
            "partition": params.partition,
            "account": params.account,
            "qos": params.qos,
            "cpus": params.cpus,
            "gpus": params.gpus,
            "mem": params.mem,
            "extra_args": list(params.extra_args),
            "worker_cmd": worker_command(params),
            "worker_start_cmd": params.worker_start_cmd,
            "worker_stop_cmd": params.worker_stop_cmd,
            "env": dict(params.env),
            "modules": list(params.modules),
        }

    # ------------------------------------------------------------- CLI dialect

    def submit_argv(self, script: Path, hold: bool) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, stdout: str, argv) -> str:
        job_id = stdout.strip().splitlines()[-1].strip() if stdout.strip() else ""
        if not job_id:
            raise SchedulerError(f"`{shlex.join(argv)}` printed no job id", command=argv)
        return job_id

    def status_argv(self, job_ids: list[str]) -> list[str]:
        raise NotImplementedError

    def parse_status(self, stdout: str) -> dict[str, RawStatus]:
        raise NotImplementedError

    def status_error_means_gone(self, error: SchedulerError) -> bool:
        """Whether a failed status call just means the jobs are no longer known."""
        return False

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        raise NotImplementedError

    # ------------------------------------------------------------- states

    def classify(self, raw: RawStatus | None, had_workers: bool):
        """(our state, end reason or None) for a job's raw status (None: gone)."""
        if raw is not None and raw.phase is not None:
            return self._classify_phase(raw, had_workers)
        if raw is not None and raw.word in self.queued_words:
            return AllocState.QUEUED, None
        if raw is not None and raw.word in self.running_words:
            return AllocState.RUNNING, None
        return self.ended(raw, had_workers)

    def _classify_phase(self, raw: RawStatus, had_workers: bool):
        if raw.phase == "queued":
            return AllocState.QUEUED, None
        if raw.phase == "running":
            return AllocState.RUNNING, None
        if raw.aborted:
            return AllocState.FINISHED, EndReason("cancelled", False)
        return self.ended(raw, had_workers)

    def ended(self, raw: RawStatus | None, had_workers: bool):
        if raw is not None and raw.exit_code:
            return AllocState.FAILED, EndReason(f"exit code {raw.exit_code}", True)
        if not had_workers:
            return AllocState.FAILED, EndReason("ended before any worker connected", True)
        return AllocState.FINISHED, EndReason("completed", False)
