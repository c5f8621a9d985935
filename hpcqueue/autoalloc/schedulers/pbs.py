"""PBS (PBS Pro, OpenPBS, Torque): qsub, one qstat call for all allocations, qdel."""

from __future__ import annotations

import re
from pathlib import Path

from hpcqueue.autoalloc.model import AllocState, EndReason
from hpcqueue.autoalloc.schedulers.base import RawStatus, Scheduler, run_quietly
from hpcqueue.exceptions import SchedulerError


#: what qsub prints: the sequence number, [] for an array, and the server's name
JOB_ID = re.compile(r"\d+(\[\d*\])?(\.[A-Za-z0-9_.-]+)?")


class Pbs(Scheduler):
    name = "pbs"
    template = "pbs.sh.j2"
    queued_words = frozenset({"Q", "H", "W", "T", "S", "U"})
    running_words = frozenset({"R", "E", "B"})
    cli_commands = ("qsub", "qstat", "qdel")
    batch_env = ("PBS_JOBID",)

    @classmethod
    def end_time(cls, job_id: str) -> float | None:
        """From `qstat -f`: the walltime limit less the walltime used."""
        import time

        from hpcqueue.model import parse_duration

        out = run_quietly(["qstat", "-f", job_id])
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
        return None if limit is None else time.time() + limit - (used or 0)

    def submit_argv(self, script: Path, hold: bool) -> list[str]:
        # -o/-e on the command line too: Slurm's qsub wrapper ignores the #PBS lines
        out = script.parent
        return ["qsub"] + (["-h"] if hold else []) + [
            "-o", str(out / "stdout"), "-e", str(out / "stderr"), str(script)]

    def parse_submit(self, stdout: str, argv) -> str:
        """A PBS job id (123, 123.server, 123[].server) or an error quoting the reply: a job
        id misread from another scheduler's qsub could never be cancelled."""
        job_id = super().parse_submit(stdout, argv)
        if not JOB_ID.fullmatch(job_id):
            said = " ".join(stdout.split())[:200]
            raise SchedulerError(f"`{argv[0]}` replied {said!r}, not a PBS job id: is this "
                                 "qsub PBS's? (`qsub --version`; another scheduler's qsub "
                                 "may have queued a job)", command=argv)
        return job_id

    def status_argv(self, job_ids: list[str]) -> list[str]:
        return ["qstat", "-f"] + list(job_ids)

    def parse_status(self, stdout: str) -> dict[str, RawStatus]:
        """Read `qstat -f` blocks: 'Job Id: X' then 'key = value' lines."""
        out: dict[str, RawStatus] = {}
        current = None
        for line in stdout.splitlines():
            text = line.strip()
            if text.startswith("Job Id:"):
                current = text.split(":", 1)[1].strip()
                out[current] = RawStatus("?")
                continue
            if current is None or " = " not in text:
                continue
            key, value = (p.strip() for p in text.split(" = ", 1))
            if key == "job_state":
                out[current].word = value
            elif key in ("Exit_status", "exit_status"):
                try:
                    out[current].exit_code = int(value)
                except ValueError:
                    pass
        # qstat may print ids with a server suffix; index both ways
        for job_id in list(out):
            short = job_id.split(".")[0]
            out.setdefault(short, out[job_id])
        return out

    def status_error_means_gone(self, error: SchedulerError) -> bool:
        text = (error.stderr or "") + (error.stdout or "")
        if error.returncode == 153 and not text.strip():  # Torque-style: unknown job id
            return True
        return "Unknown Job Id" in text or "Invalid job id" in text or "unknown job" in text

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel"] + list(job_ids)

    def ended(self, raw: RawStatus | None, had_workers: bool):
        if raw is not None and raw.exit_code is not None:
            code = raw.exit_code
            if code == -11 or code == 271:  # PBS: walltime exceeded / killed by qdel
                return AllocState.FINISHED, EndReason(
                    "time limit reached" if code == -11 else "cancelled", False)
            if code < 0:
                return AllocState.FINISHED, EndReason(f"ended by PBS (status {code})", False)
        return super().ended(raw, had_workers)
