"""Whose `qsub`, `qstat` and `qdel` these are, from what they print for ``--version``.

PBS Pro, OpenPBS, Torque, Slurm's PBS wrappers and Grid Engine all name their commands
qsub/qstat/qdel, and a machine may have several, in PATH order.  Submitting through the wrong
one misreads its reply (Grid Engine's "Your job 12 ... has been submitted" is no PBS job id)
and leaves a job behind that the matching qdel cannot remove.  So before a dry run each
command is asked for its version, and a command of another scheduler is refused, naming what
it is and the `alloc add` that fits it.

``--version`` is safe on every one of them: PBS and Torque print their version; Slurm's Perl
wrappers and Grid Engine's qsub reject the option; Grid Engine's qstat prints its version and
its qdel looks for a job named "--version" (there is none) and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpcqueue.exceptions import SchedulerError


@dataclass(frozen=True)
class Flavour:
    key: str        # pbs, torque, slurm-pbs, sge
    label: str      # for messages: "Grid Engine's"
    scheduler: str  # the `alloc add` scheduler that drives it


PBS = Flavour("pbs", "PBS Pro's or OpenPBS's", "pbs")
TORQUE = Flavour("torque", "Torque's", "pbs")
SLURM_PBS = Flavour("slurm-pbs", "Slurm's PBS wrapper", "pbs")
SGE = Flavour("sge", "Grid Engine's", "sge")

#: (pattern in the output of `CMD --version`, flavour), first match wins
SIGNS = [
    (re.compile(r"^pbs_version\s*=", re.M), PBS),
    (re.compile(r"^Version:\s*\d", re.M), TORQUE),
    (re.compile(r"^Unknown option: version$", re.M), SLURM_PBS),   # Perl's Getopt::Long
    (re.compile(r"^(SGE|UGE|OGS/GE|GE|SoGE)\s+\d", re.M), SGE),     # qstat, qsub -help
    (re.compile(r'invalid option argument "--version"'), SGE),      # qsub
    (re.compile(r"The job --version of user\(s\)"), SGE),           # qdel
    (re.compile(r"Grid Engine|SGE_ROOT"), SGE),
]


def flavour_of(output: str) -> Flavour | None:
    """Which scheduler printed OUTPUT for `--version`; None when it is none we know."""
    for pattern, flavour in SIGNS:
        if pattern.search(output):
            return flavour
    return None


#: how messages name the schedulers whose commands are checked
NAMES = {"pbs": "PBS", "sge": "Grid Engine"}


def mismatch(command: str, found: Flavour, scheduler: str) -> SchedulerError:
    name = NAMES.get(scheduler, scheduler)
    return SchedulerError(f"this {command} is {found.label}, not {name}'s: use `alloc add "
                          f"{found.scheduler}`, or put {name}'s commands first on PATH")


async def check_commands(scheduler, run) -> dict[str, Flavour | None]:
    """Ask each of SCHEDULER's commands (its ``cli_commands``) for its version with RUN (a
    transport's runner) and refuse one that belongs to another scheduler.  What each turned
    out to be (None: not recognised, let through)."""
    found: dict[str, Flavour | None] = {}
    for command in scheduler.cli_commands:
        try:
            output = await run([command, "--version"], timeout=20.0)
        except SchedulerError as e:
            if e.returncode is None:  # not found, not runnable, no answer: said clearly
                raise
            output = (e.stdout or "") + (e.stderr or "")
        flavour = flavour_of(output)
        if flavour is not None and flavour.scheduler != scheduler.name:
            raise mismatch(command, flavour, scheduler.name)
        found[command] = flavour
    return found
