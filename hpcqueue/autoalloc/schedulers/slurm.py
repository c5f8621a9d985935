"""Slurm: sbatch, one squeue call for all allocations, scancel."""

from __future__ import annotations

from pathlib import Path

from hpcqueue.autoalloc.model import AllocState, EndReason
from hpcqueue.autoalloc.schedulers.base import RawStatus, Scheduler, run_quietly
from hpcqueue.exceptions import SchedulerError

#: job states that end a job for reasons that are not the queue's fault
NOT_OUR_FAULT = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "time limit reached",
    "PREEMPTED": "preempted",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node boot failure",
    "DEADLINE": "deadline reached",
    "REVOKED": "revoked (federation)",
}


def _epoch(text: str) -> float | None:
    """Seconds since the epoch from squeue's local time (2026-11-25T01:32:03); None for
    N/A, Unknown or anything else."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class Slurm(Scheduler):
    name = "slurm"
    template = "slurm.sh.j2"
    transports = ("cli", "pyslurm", "ssh")
    batch_env = ("SLURM_JOB_ID",)
    batch_rank = 10  # first: Slurm's PBS wrappers may set PBS_* variables in its jobs too
    queued_words = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD",
                              "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"})
    running_words = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT",
                               "RESIZING", "STOPPED"})

    @classmethod
    def end_time(cls, job_id: str) -> float | None:
        import time

        from hpcqueue.model import slurm_time

        out = run_quietly(["squeue", "-h", "-j", job_id, "-o", "%L"])
        text = out.strip().splitlines()[0].strip() if out and out.strip() else ""
        try:
            return time.time() + float(slurm_time(text))
        except ValueError:
            return None  # UNLIMITED, NOT_SET, INVALID, nothing

    def time(self, seconds: float) -> str:
        s = max(60, int(round(seconds)))
        d, rem = divmod(s, 86400)
        h, rem = divmod(rem, 3600)
        m, s = divmod(rem, 60)
        return f"{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"

    def submit_argv(self, script: Path, hold: bool) -> list[str]:
        return ["sbatch", "--parsable"] + (["--hold"] if hold else []) + [str(script)]

    def parse_submit(self, stdout: str, argv) -> str:
        # --parsable prints "jobid" or "jobid;cluster"
        return super().parse_submit(stdout, argv).split(";")[0]

    def status_argv(self, job_ids: list[str]) -> list[str]:
        # --states=all keeps finished jobs (for MinJobAge); exit_code is the raw wait status
        return ["squeue", "--noheader", "--states=all", "--jobs=" + ",".join(job_ids),
                "--Format=JobID:|,State:|,Reason:|,exit_code:|,StartTime:|,EndTime:|"]

    def parse_status(self, stdout: str) -> dict[str, RawStatus]:
        out = {}
        for line in stdout.splitlines():
            parts = [p.strip() for p in line.strip().split("|")]
            if len(parts) >= 2 and parts[0]:
                raw = RawStatus(parts[1], parts[2] if len(parts) > 2 else "")
                if len(parts) > 3 and parts[3].isdigit():
                    status = int(parts[3])
                    raw.exit_code = status >> 8 if status & 0x7F == 0 else 128 + (status & 0x7F)
                if len(parts) > 5 and raw.word not in self.queued_words:
                    # (a pending job's StartTime is a guess, a running one's EndTime its limit)
                    raw.started = _epoch(parts[4])
                    if raw.word not in self.running_words:
                        raw.ended = _epoch(parts[5])
                out[parts[0]] = raw
        return out

    def status_error_means_gone(self, error: SchedulerError) -> bool:
        # a single unknown id makes squeue fail; several are left out silently
        return "Invalid job id" in (error.stderr or "")

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["scancel"] + list(job_ids)

    def ended(self, raw: RawStatus | None, had_workers: bool):
        if raw is not None and raw.word == "COMPLETED":
            raw.exit_code = 0
        if raw is not None and raw.word in NOT_OUR_FAULT:
            return AllocState.FINISHED, EndReason(NOT_OUR_FAULT[raw.word], False)
        if raw is not None and raw.word in ("FAILED", "OUT_OF_MEMORY"):
            why = "the job script failed" if raw.word == "FAILED" else "out of memory"
            return AllocState.FAILED, EndReason(
                f"{why}{' (' + raw.reason + ')' if raw.reason and raw.reason != 'None' else ''}",
                True)
        return super().ended(raw, had_workers)
