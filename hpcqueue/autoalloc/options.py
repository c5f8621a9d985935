"""The options of an allocation queue: one table.

Each :class:`QueueOption` is one :class:`~hpcqueue.autoalloc.model.QueueParams` field, and says
its `alloc add` flag, its profile key, its environment variable, its kind (how a value is
checked, read from text and shown), its default, whether `alloc edit` may change it on a live
queue, and its help.  Generated from it: the options of `alloc add`, `alloc dry-run` and
`alloc edit` (hpcqueue/cli/alloc.py), the profile schema (``PROFILE_KEYS`` in
hpcqueue/config/schema.py), the parsing of ``HPCQUEUE_*`` variables (hpcqueue/config) and the
defaults of ``QueueParams``.  A new queue option is one line here (and its use).

Standard library only: hpcqueue/config imports this to check files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from hpcqueue.exceptions import UsageError

#: a queue pauses itself after this many failures of its own in a row
DEFAULT_PAUSE_AFTER = 3
#: the folders of this many ended allocations are kept, to look at
DEFAULT_KEEP_DIRS = 20
#: workers of an allocation exit after being idle this long (seconds)
DEFAULT_IDLE_TIMEOUT = 300.0

_SAFE = re.compile(r"[A-Za-z0-9_.:@+/=,-]+")


def check_word(value: str | None, what: str) -> str | None:
    """A scheduler option value that is one word (no spaces, quotes or newlines)."""
    if value is None:
        return None
    if not _SAFE.fullmatch(value):
        raise UsageError(f"invalid {what} {value!r}: use letters, digits and _.:@+/=,- only")
    return value


# ---------------------------------------------------------------- kinds of value

@dataclass(frozen=True)
class Kind:
    """How values of one kind are checked (from a profile: YAML values), read from text (an
    environment variable or a flag) and typed on the command line."""

    name: str                          # the metavar: N, DURATION, WORD, ...
    check: Callable[[Any], Any]        # a value -> the value to keep; ValueError if wrong
    parse: Callable[[str], Any] = str  # text -> a value for `check`; ValueError if wrong
    #: the names it may take (called when needed: schedulers are found on first use)
    choices: Callable[[], list] | None = None

    def from_text(self, raw: str):
        return self.check(self.parse(raw))


def _str(v):
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def _word(v):
    _str(v)
    try:
        check_word(v, "value")
    except UsageError as e:
        raise ValueError(str(e).split(": ", 1)[-1]) from None
    return v


def _whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _int(low: int):
    def check(v):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError("must be a whole number")
        if v < low:
            raise ValueError(f"must be at least {low}")
        return v
    return check


def _duration(v):
    from hpcqueue.model import parse_duration

    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError("must be a duration such as 90s, 10m, 1h or 01:30:00")
    try:
        return parse_duration(str(v))
    except Exception:
        raise ValueError(f"{v!r} is not a duration: use e.g. 90s, 10m, 1h or 01:30:00") \
            from None


def _choice(names: Callable[[], list]):
    def check(v):
        options = names()
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return v
    return check


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("must be a list of strings")
    return v


def _str_map(v):
    if not isinstance(v, dict) or not all(
            isinstance(k, str) and isinstance(x, (str, int, float)) for k, x in v.items()):
        raise ValueError("must map names to values")
    return {k: str(x) for k, x in v.items()}


def _server_address(v):
    if not (isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("hostname", "interface")
            and isinstance(next(iter(v.values())), str)):
        raise ValueError("must be {hostname: NAME} or {interface: IFACE}")
    return v


def _address_text(raw: str) -> dict:
    kind, _, value = raw.partition(":")
    return {kind: value}


def _scheduler_names() -> list:
    from hpcqueue.autoalloc import backends

    return backends.scheduler_names()


def _transport_names() -> list:
    from hpcqueue.autoalloc import backends

    return backends.transport_names()


TEXT = Kind("TEXT", _str)
WORD = Kind("WORD", _word)
PATH = Kind("FILE", _str)
DURATION = Kind("DURATION", _duration)
COUNT = Kind("N", _int(1), _whole)           # at least 1
COUNT0 = Kind("N", _int(0), _whole)          # at least 0
WORDS = Kind("WORDS", _str_list, str.split)  # from text: split on spaces
NAME_VALUES = Kind("NAME=VALUE...", _str_map,
                   lambda raw: dict(item.split("=", 1) for item in raw.split() if "=" in item))
ADDRESS = Kind("KIND:VALUE", _server_address, _address_text)
SCHEDULER = Kind("SCHEDULER", _choice(_scheduler_names), choices=_scheduler_names)
TRANSPORT = Kind("TRANSPORT", _choice(_transport_names), choices=_transport_names)


# ---------------------------------------------------------------- the table

#: `alloc edit` may change the option of a live queue; the next cycle uses it, allocations
#: already submitted keep their script
LIVE = "live"
#: `alloc edit` may change it after a dry run of the changed queue passes (the scheduler may
#: refuse the new value: a partition's time limit)
DRY_RUN = "dry-run"


@dataclass(frozen=True)
class QueueOption:
    field: str              # the QueueParams field
    kind: Kind
    help: str
    default: Any = None     # QueueParams' default (None: none; lists and maps: empty)
    flag: bool = True       # whether `alloc add` has --FIELD-WITH-DASHES
    key: bool = True        # whether a profile (and an HPCQUEUE_* variable) may set it
    edit: str | None = None  # LIVE, DRY_RUN or None: whether `alloc edit` may change it

    @property
    def flag_name(self) -> str | None:
        return "--" + self.field.replace("_", "-") if self.flag else None

    @property
    def profile_key(self) -> str | None:
        return self.field.replace("_", "-") if self.key else None

    @property
    def env_var(self) -> str | None:
        return "HPCQUEUE_" + self.field.upper() if self.key else None


OPTIONS: tuple[QueueOption, ...] = (
    QueueOption("scheduler", SCHEDULER, "The batch scheduler (the argument of `alloc add`).",
                flag=False),
    QueueOption("name", TEXT, "A name for the queue.", key=False),
    QueueOption("time_limit", DURATION, "Wall time of each allocation.", edit=DRY_RUN),
    QueueOption("backlog", COUNT, "Allocations that may wait in the scheduler's queue at once.",
                default=1, edit=LIVE),
    QueueOption("workers_per_alloc", COUNT, "Nodes per allocation, one worker each.",
                default=1),
    QueueOption("max_worker_count", COUNT,
                "Hard limit on this queue's workers, queued and running.", edit=LIVE),
    QueueOption("idle_timeout", DURATION, "Workers exit after being idle this long.",
                default=DEFAULT_IDLE_TIMEOUT, edit=LIVE),
    QueueOption("partition", WORD, "Slurm partition / PBS queue / SGE queue."),
    QueueOption("account", WORD, "Account to charge."),
    QueueOption("qos", WORD, "Quality of service (Slurm)."),
    QueueOption("cpus", COUNT, "CPUs per worker."),
    QueueOption("gpus", COUNT0, "GPUs per worker."),
    QueueOption("mem", WORD, "Memory per node, e.g. 4G."),
    QueueOption("worker_start_cmd", TEXT, "Shell command run before the worker starts."),
    QueueOption("worker_stop_cmd", TEXT, "Shell command run after the worker stops."),
    QueueOption("template", PATH, "A Jinja template to use instead of the packaged one."),
    QueueOption("transport", TRANSPORT, "How scripts reach the scheduler.", default="cli"),
    QueueOption("login_host", TEXT,
                "With --transport ssh: the host to run the scheduler's commands on."),
    QueueOption("target_drain", DURATION,
                "Size by throughput: workers enough to run the waiting tasks within this "
                "time, from their observed run times (default: a worker per waiting task).",
                edit=LIVE),
    QueueOption("pause_after", COUNT,
                "Pause the queue after this many of its own failures in a row.",
                default=DEFAULT_PAUSE_AFTER, edit=LIVE),
    QueueOption("keep_dirs", COUNT0, "Keep the folders of this many ended allocations.",
                default=DEFAULT_KEEP_DIRS, edit=LIVE),
    QueueOption("modules", WORDS, "Modules to `module load` before the worker starts.",
                flag=False),
    QueueOption("env", NAME_VALUES, "Environment variables for the worker.", flag=False),
    # the flags of `alloc add` give them after `--`: one directive line each
    QueueOption("extra_args", WORDS, "Extra scheduler arguments, one directive line each.",
                flag=False),
    QueueOption("server_address", ADDRESS,
                "How workers reach the server: {hostname: NAME} or {interface: IFACE}.",
                flag=False),
)

BY_FIELD = {o.field: o for o in OPTIONS}
BY_KEY = {o.profile_key: o for o in OPTIONS if o.profile_key}
EDITABLE = tuple(o for o in OPTIONS if o.edit)


def default(field: str):
    """QueueParams' default for FIELD (from the table)."""
    return BY_FIELD[field].default


def show_default(option: QueueOption) -> str | None:
    """The default as `--help` shows it."""
    from hpcqueue.model import format_duration

    if option.default is None:
        return None
    return format_duration(option.default) if option.kind is DURATION else str(option.default)
