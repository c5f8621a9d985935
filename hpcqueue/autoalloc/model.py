"""Allocation queues and allocations: their parameters, states and end reasons."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from enum import Enum

from hpcqueue.autoalloc.options import check_word, default
from hpcqueue.exceptions import UsageError

#: seconds to wait after the n-th submission failure in a row
BACKOFF = (0, 60, 900, 1800, 3600)
#: failed status reads in a row after which an allocation is given up as unknown (as
#: HyperQueue's MAX_QUEUED_STATUS_ERROR_COUNT): a job whose status can never be read must not
#: hold a place in the backlog for ever
MAX_STATUS_ERRORS = 10


class AllocState(str, Enum):
    QUEUED = "queued"      # in the scheduler's queue
    RUNNING = "running"    # the batch job runs (workers may still be booting)
    FINISHED = "finished"  # ended, not the queue's fault
    FAILED = "failed"      # ended, the queue's fault
    UNKNOWN = "unknown"    # its status could not be read MAX_STATUS_ERRORS times in a row:
                           # given up, no longer counted toward the backlog


class QueueState(str, Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    DRAINING = "draining"  # removed; waits for its allocations to end
    REMOVED = "removed"


@dataclass
class QueueParams:
    """Everything `alloc add` resolved: plain values, journaled as they are.  The defaults
    of the queue options are those of their table (hpcqueue/autoalloc/options.py)."""

    scheduler: str
    time_limit: float
    name: str | None = None
    backlog: int = default("backlog")
    workers_per_alloc: int = default("workers_per_alloc")
    max_worker_count: int | None = None
    idle_timeout: float = default("idle_timeout")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus: int | None = None
    gpus: int | None = None
    mem: str | None = None
    worker_start_cmd: str | None = None
    worker_stop_cmd: str | None = None
    template: str | None = None
    extra_args: list = field(default_factory=list)
    transport: str = default("transport")
    pause_after: int = default("pause_after")
    keep_dirs: int = default("keep_dirs")
    modules: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    profile: str | None = None
    login_host: str | None = None
    #: the template's text, read when the queue was made: a later edit of the file does
    #: not change a running queue
    template_text: str | None = None
    #: how workers reach the server, when not by the access record's host
    server_address: dict | None = None
    server_host: str | None = None
    #: size by throughput: workers enough to run the waiting tasks within this many seconds
    #: (`alloc add --target-drain`); None: a worker per waiting task (see autoalloc/policy.py)
    target_drain: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QueueParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> "QueueParams":
        if self.time_limit <= 0:
            raise UsageError("--time-limit must be more than zero")
        for name in ("backlog", "workers_per_alloc"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.target_drain is not None and self.target_drain <= 0:
            raise UsageError("--target-drain must be more than zero, e.g. 10m")
        if self.max_worker_count is not None and self.max_worker_count < self.workers_per_alloc:
            raise UsageError(
                f"--max-worker-count {self.max_worker_count} is less than --workers-per-alloc "
                f"{self.workers_per_alloc}: no allocation could ever be submitted")
        for name in ("partition", "account", "qos"):
            check_word(getattr(self, name), f"--{name}")
        from hpcqueue.autoalloc import backends

        allowed = backends.transports_for(self.scheduler)
        if self.transport not in allowed:
            raise UsageError(f"--transport {self.transport} does not work with {self.scheduler}: "
                             f"use one of {', '.join(allowed)}")
        if self.transport == "ssh" and not self.login_host:
            raise UsageError("--transport ssh needs --login-host HOST")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?B?", self.mem, re.I):
            raise UsageError(f"invalid --mem {self.mem!r}: use e.g. 4G or 500M")
        return self


@dataclass
class EndReason:
    """How an allocation ended, and whether that is the queue's fault."""

    text: str
    fault: bool
