"""The one place where schedulers and transports plug in: the registry.

A **scheduler is its class**: a module holding one
:class:`~hpcqueue.autoalloc.schedulers.base.Scheduler` subclass with a ``name``, plus its
template.  The class declares everything about itself (name, template, transports, DRMAA
native spec, batch-job detection, time left); the CLI choices, the profile schema, the
server's checks, the DRMAA transport and a starting worker all read it from here.  There is no
table to edit: the registry lists the modules of two packages,

- :mod:`hpcqueue.autoalloc.schedulers`, hpcqueue's own (templates in ``templates/``);
- ``hpcqueue_schedulers``, a namespace package that any directory on ``PYTHONPATH`` may
  contribute to: a site's scheduler, its template beside it, without touching hpcqueue's
  tree (docs/transports.md has the recipe).

A **transport** is one module and one line in ``TRANSPORTS`` (import strings: nothing is
imported until a queue uses it).

Scheduler modules import only the standard library at import time (a starting worker imports
them all to find its batch job).
"""

from __future__ import annotations

import importlib
import os
import pkgutil

from hpcqueue.exceptions import UsageError

TRANSPORTS = {
    "cli": "hpcqueue.autoalloc.transports.cli:CliTransport",
    "local": "hpcqueue.autoalloc.transports.local:LocalTransport",
    "pyslurm": "hpcqueue.autoalloc.transports.pyslurm:PyslurmTransport",
    "ssh": "hpcqueue.autoalloc.transports.ssh:SshTransport",
    "drmaa": "hpcqueue.autoalloc.transports.drmaa:DrmaaTransport",
}

#: the packages whose modules are schedulers: hpcqueue's own, then those of the site
PACKAGES = ("hpcqueue.autoalloc.schedulers", "hpcqueue_schedulers")
#: modules of those packages that are not schedulers
NOT_SCHEDULERS = {"base"}

_registry: dict[str, type] | None = None


def _modules():
    """The names of the modules of PACKAGES (a missing site package: none of its)."""
    import importlib.util

    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for info in pkgutil.iter_modules(spec.submodule_search_locations):
            if info.name not in NOT_SCHEDULERS and not info.name.startswith("_"):
                yield f"{package}.{info.name}"


def _discover() -> dict[str, type]:
    from hpcqueue.autoalloc.schedulers.base import Scheduler

    found: dict[str, type] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Scheduler)
                    and value.__module__ == module.__name__ and value.name):
                if value.name in found and found[value.name] is not value:
                    raise UsageError(f"two schedulers are named {value.name!r}: "
                                     f"{found[value.name].__module__} and {module.__name__}")
                found[value.name] = value
    return dict(sorted(found.items()))


def schedulers() -> dict[str, type]:
    """Every registered scheduler class by name (found once per process)."""
    global _registry
    if _registry is None:
        _registry = _discover()
    return _registry


def scheduler_names() -> list[str]:
    return list(schedulers())


def scheduler_class(name: str) -> type:
    table = schedulers()
    if name not in table:
        raise UsageError(f"unknown scheduler {name!r}: use one of {', '.join(table)}")
    return table[name]


def scheduler(name: str):
    return scheduler_class(name)()


def transports_for(name: str) -> tuple:
    """The transports a queue of scheduler NAME may choose (`--transport`)."""
    return tuple(scheduler_class(name).transports)


def transport_names() -> list[str]:
    """The transports any scheduler offers (the `--transport` choices)."""
    names = {t for cls in schedulers().values() for t in cls.transports}
    return [t for t in TRANSPORTS if t in names]


def batch_job(env=None) -> tuple[str | None, str | None]:
    """(scheduler name, job id) of the batch job whose environment ENV is, if any."""
    env = os.environ if env is None else env
    for cls in sorted(schedulers().values(), key=lambda c: (c.batch_rank, c.name)):
        job_id = cls.batch_job(env)
        if job_id:
            return cls.name, job_id
    return None, None


def _load(table: dict, name: str, what: str):
    if name not in table:
        raise UsageError(f"unknown {what} {name!r}: use one of {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def transport(scheduler_name: str, transport_name: str, **options):
    sched = scheduler(scheduler_name)
    if transport_name not in sched.transports:
        raise UsageError(f"the {transport_name} transport does not work with {scheduler_name}: "
                         f"use one of {', '.join(sched.transports)}")
    return _load(TRANSPORTS, sched.deliver_with(transport_name), "transport")(**options)
