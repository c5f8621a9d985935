"""The one place where schedulers and transports plug in.

A new scheduler is one module, one template and one line in ``SCHEDULERS``;
a new transport is one module and one line in ``TRANSPORTS``.  Entries are
import strings, so nothing is imported until a queue uses it.
"""

from __future__ import annotations

import importlib

from hpcqueue.exceptions import UsageError

SCHEDULERS = {
    "slurm": "hpcqueue.autoalloc.schedulers.slurm:Slurm",
    "pbs": "hpcqueue.autoalloc.schedulers.pbs:Pbs",
    "sge": "hpcqueue.autoalloc.schedulers.sge:Sge",
    "local": "hpcqueue.autoalloc.schedulers.local:Local",
}

TRANSPORTS = {
    "cli": "hpcqueue.autoalloc.transports.cli:CliTransport",
    "local": "hpcqueue.autoalloc.transports.local:LocalTransport",
    "pyslurm": "hpcqueue.autoalloc.transports.pyslurm:PyslurmTransport",
    "ssh": "hpcqueue.autoalloc.transports.ssh:SshTransport",
    "drmaa": "hpcqueue.autoalloc.transports.drmaa:DrmaaTransport",
}


def _load(table: dict, name: str, what: str):
    if name not in table:
        raise UsageError(f"unknown {what} {name!r}: use one of {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def scheduler(name: str):
    return _load(SCHEDULERS, name, "scheduler")()


def transport(scheduler_name: str, transport_name: str, **options):
    if scheduler_name == "local":
        transport_name = "local"
    elif transport_name == "local":
        raise UsageError("the local transport only works with the local scheduler")
    return _load(TRANSPORTS, transport_name, "transport")(**options)
