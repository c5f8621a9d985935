"""(Son of) Grid Engine: qsub -terse, one qstat call for all allocations, qdel.

Finished jobs leave `qstat` at once (and `qacct` needs accounting), so an
allocation that is gone is classified by whether its workers connected.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpcqueue.autoalloc.model import AllocState, EndReason
from hpcqueue.autoalloc.schedulers.base import RawStatus, Scheduler, run_quietly
from hpcqueue.exceptions import SchedulerError

PARALLEL_ENV = "smp"


class Sge(Scheduler):
    name = "sge"
    template = "sge.sh.j2"
    queued_words = frozenset({"qw", "hqw", "hRwq", "Rq", "t"})
    running_words = frozenset({"r", "Rr", "s", "S", "T", "ts", "tr"})
    cli_commands = ("qsub", "qstat", "qdel")
    transports = ("cli", "drmaa", "ssh")
    drmaa_native_spec = "-b n"  # a script, not a binary: its #$ directives apply
    batch_env = ("JOB_ID", "SGE_O_WORKDIR")

    @classmethod
    def end_time(cls, job_id: str) -> float | None:
        """Grid Engine puts no h_rt in the job's environment: ask qstat once."""
        from hpcqueue.model import parse_duration

        out = run_quietly(["qstat", "-j", job_id, "-xml"])
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

    def context(self, *args, **kwargs) -> dict:
        ctx = super().context(*args, **kwargs)
        ctx["parallel_env"] = PARALLEL_ENV
        return ctx

    def submit_argv(self, script: Path, hold: bool) -> list[str]:
        return ["qsub", "-terse"] + (["-h"] if hold else []) + [str(script)]

    def parse_submit(self, stdout: str, argv) -> str:
        job_id = super().parse_submit(stdout, argv)
        return job_id.split(".")[0]  # array jobs print 5.1-3:1

    def status_argv(self, job_ids: list[str]) -> list[str]:
        # every pending and running job of every user: one call, filtered here
        return ["qstat", "-u", "*"]

    def parse_status(self, stdout: str) -> dict[str, RawStatus]:
        out = {}
        for line in stdout.splitlines():
            parts = line.split()
            if len(parts) >= 5 and re.fullmatch(r"\d+", parts[0]):
                out[parts[0]] = RawStatus(parts[4])
        return out

    def classify(self, raw, had_workers: bool):
        if raw is not None and "E" in raw.word:  # Eqw: an error keeps it queued forever
            return AllocState.FAILED, EndReason(f"in error state {raw.word} (see qstat -j)",
                                                True)
        return super().classify(raw, had_workers)

    def status_error_means_gone(self, error: SchedulerError) -> bool:
        return False

    def cancel_argv(self, job_ids: list[str]) -> list[str]:
        return ["qdel"] + list(job_ids)
