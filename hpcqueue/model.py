"""Records and value types: task and job states, array ranges, durations.

Vocabulary:
- a *job* is one `submit`: a command and the set of task ids it runs for;
- a *task* is one run of that command for one id (an array index or a line);
- an *instance* counts how often a task was started: a restart gets a new one;
- a *worker* is a process that runs tasks on one machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from enum import Enum
from typing import Iterator, Sequence

from hpcqueue.exceptions import UsageError


class TaskState(str, Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"


#: Task states as stored in a job's compact state column (one byte per task).
STATE_CODES = (
    TaskState.WAITING,
    TaskState.RUNNING,
    TaskState.FINISHED,
    TaskState.FAILED,
    TaskState.CANCELED,
)
WAITING, RUNNING, FINISHED, FAILED, CANCELED = range(5)


class JobState(str, Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"


class WorkerState(str, Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    LOST = "lost"


# --------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in `text`: `90` (seconds), `90s`, `10m`, `1h30m`, `2d`, or a Slurm
    time with colons (`01:30:00`, `30:00` = 30 minutes, `1-02:00:00`)."""
    raw = str(text).strip()
    if not raw:
        raise UsageError(f"empty {what}: use e.g. 90s, 10m, 1h30m or 01:30:00")
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        return float(raw)
    if re.fullmatch(r"(?:\d+-)?\d+(?::\d{1,2}){0,2}", raw):
        return float(slurm_time(raw))
    pos, total = 0, 0.0
    for part in _DURATION_PART.finditer(raw):
        if raw[pos:part.start()].strip():
            break
        total += float(part.group(1)) * _UNIT_SECONDS[part.group(2).lower()]
        pos = part.end()
    if pos == 0 or raw[pos:].strip():
        raise UsageError(
            f"invalid {what} {text!r}: use e.g. 90s, 10m, 1h30m, 2d or 01:30:00"
        )
    return total


def slurm_time(text: str) -> int:
    """Seconds in a Slurm time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    days, _, rest = text.rpartition("-") if "-" in text else ("", "", text)
    parts = [int(p) for p in rest.split(":")]
    if days:
        h, mi, s = (parts + [0, 0])[:3]
        return int(days) * 86400 + h * 3600 + mi * 60 + s
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.0f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"


def parse_retry_delay(text: str) -> tuple[float, float]:
    """(MIN, MAX) seconds from `MIN[:MAX]` (`1s:4s`, `30s`, `10s:10m`): MIN for the first
    retry, doubling up to MAX; MAX defaults to MIN.  MIN and MAX are durations with units
    or plain seconds (not the HH:MM:SS form: the colon splits them)."""
    raw = str(text).strip()
    parts = raw.split(":")
    if len(parts) > 2:
        raise UsageError(f"invalid --retry-delay {text!r}: use MIN or MIN:MAX with units, "
                         "e.g. 1s:4s or 30s:10m (not HH:MM:SS)")
    low = parse_duration(parts[0], "--retry-delay MIN")
    high = parse_duration(parts[1], "--retry-delay MAX") if len(parts) == 2 else low
    if low <= 0:
        raise UsageError(f"invalid --retry-delay {text!r}: MIN must be more than 0 "
                         "(leave the option out for no delay)")
    if high < low:
        raise UsageError(f"invalid --retry-delay {text!r}: MAX is less than MIN; write it "
                         "MIN:MAX, e.g. 1s:4s")
    if high > MAX_SECONDS:
        raise UsageError(f"invalid --retry-delay {text!r}: at most {MAX_SECONDS:g} seconds")
    return low, high


def retry_delay(low: float, high: float, retry: int) -> float:
    """Seconds before retry number RETRY (1 for the first) runs: LOW, doubling up to HIGH."""
    if retry <= 1:
        return low
    return min(high, low * 2.0 ** min(retry - 1, 255))  # retries fit a byte


# --------------------------------------------------------------------- resources

#: what `--resource` and `--env` accept as a name (the server checks specs with them too)
RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_resources(items: Sequence[str]) -> dict[str, int]:
    """`gpus=2` pairs into a dict; the name `cpus` is reserved for `--cpus`."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not RESOURCE_NAME.fullmatch(name):
            raise UsageError(f"invalid resource {item!r}: use NAME=COUNT, e.g. gpus=2")
        if name == "cpus":
            raise UsageError("give cpus with --cpus, not --resource cpus=N")
        try:
            count = int(value)
        except ValueError:
            raise UsageError(
                f"invalid resource {item!r}: the count must be a whole number"
            ) from None
        if count < 0:
            raise UsageError(f"invalid resource {item!r}: the count must not be negative")
        out[name] = count
    return out


def parse_env(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not ENV_NAME.fullmatch(key):
            raise UsageError(f"invalid --env {item!r}: use KEY=VALUE")
        out[key] = value
    return out


# --------------------------------------------------------------------- priorities

#: named priorities (gearmand's high/normal/low); an integer works too, and higher runs first
PRIORITY_NAMES = {"high": 100, "normal": 0, "low": -100}


def parse_priority(value: str | int) -> int:
    """A priority from `high`, `normal`, `low` or a whole number (e.g. `5`, `-3`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"invalid priority {value!r}: use high, normal, low or a whole "
                         "number (higher runs first)") from None


# --------------------------------------------------------------------- task ids


class IdRanges:
    """A sorted set of task ids kept as inclusive ranges with a step.

    A million-task array is one range: index -> id and id -> index are O(log r)
    in the number of ranges, and nothing is stored per task.
    """

    __slots__ = ("ranges", "_starts", "_count")

    def __init__(self, ranges: Sequence[Sequence[int]]):
        self.ranges = [tuple(int(x) for x in r) for r in ranges]
        starts, count = [], 0
        for start, stop, step in self.ranges:
            starts.append(count)
            count += (stop - start) // step + 1
        self._starts = starts
        self._count = count

    def __len__(self) -> int:
        return self._count

    def id_at(self, index: int) -> int:
        if len(self.ranges) == 1:
            start, _, step = self.ranges[0]
            return start + index * step
        k = bisect_right(self._starts, index) - 1
        start, _, step = self.ranges[k]
        return start + (index - self._starts[k]) * step

    def index_of(self, task_id: int) -> int | None:
        for k, (start, stop, step) in enumerate(self.ranges):
            if start <= task_id <= stop and (task_id - start) % step == 0:
                return self._starts[k] + (task_id - start) // step
        return None

    def __iter__(self) -> Iterator[int]:
        for start, stop, step in self.ranges:
            yield from range(start, stop + 1, step)

    def spec(self) -> str:
        parts = []
        for start, stop, step in self.ranges:
            if start == stop:
                parts.append(str(start))
            else:
                parts.append(f"{start}-{stop}" + (f":{step}" if step != 1 else ""))
        return ",".join(parts)


_RANGE = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")
MAX_TASKS_PER_JOB = 100_000_000
#: bounds the server holds values from the network to: wide enough for any real use
MAX_TASK_ID = 2**63 - 1  # a task id (msgpack's and most languages' signed 64 bits)
MAX_COUNT = 2**31 - 1  # cpus, resource counts, priorities (either sign)
MAX_SECONDS = 1e9  # time limits and requests, about 31 years


def parse_array(spec: str, what: str = "--array") -> IdRanges:
    """Parse `1-1000`, `0-99:2` or `1,5,10-20` into :class:`IdRanges`; errors name WHAT."""
    hint = "use e.g. 1-1000, 0-99:2 or 1,5,10-20"
    ranges: list[tuple[int, int, int]] = []
    for raw_part in str(spec).split(","):
        part = raw_part.strip()
        m = _RANGE.fullmatch(part)
        if not m:
            raise UsageError(f"invalid {what} {spec!r}: {part!r} is not a range; {hint}")
        start = int(m.group(1))
        stop = int(m.group(2)) if m.group(2) is not None else start
        step = int(m.group(3)) if m.group(3) is not None else 1
        if stop < start:
            raise UsageError(
                f"invalid {what} {spec!r}: range {part!r} ends before it starts; "
                f"write it low to high, e.g. {stop}-{start}"
            )
        if step < 1:
            raise UsageError(f"invalid {what} {spec!r}: the step in {part!r} must be 1 or more")
        stop = start + (stop - start) // step * step
        ranges.append((start, stop, step))
    ranges.sort()
    for (_, a1, _), (b0, _, _) in zip(ranges, ranges[1:]):
        if b0 <= a1:
            raise UsageError(f"invalid {what} {spec!r}: ranges overlap near {b0}; {hint}")
    ids = IdRanges(ranges)
    if len(ids) > MAX_TASKS_PER_JOB:
        raise UsageError(
            f"{what} {spec!r} has {len(ids):,} tasks; one job holds at most "
            f"{MAX_TASKS_PER_JOB:,}: split it into several submits"
        )
    return ids


# --------------------------------------------------------------------- placeholders

PLACEHOLDERS = ("JOB_ID", "TASK_ID", "INSTANCE_ID", "CWD", "SUBMIT_DIR", "HASH")
_PLACEHOLDER = re.compile(r"%\{([A-Z_]+)\}")
HASH_DIGITS = 12  # hex digits of sha256 in %{HASH}: 48 bits


def canonical_json(value) -> str:
    """VALUE as JSON with sorted keys and no whitespace: the same text for the same value,
    whatever the order of its keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True)


def param_hash(kind: str | None, cmd, task_id: int, entry: str | None) -> str:
    """%{HASH}: a short, stable hash of one task's parameters (the first HASH_DIGITS hex
    digits of the sha256 of a UTF-8 text).  The text is:

    - for an element of `--from-json` (kind ``json``): the element's canonical JSON
      (:func:`canonical_json`), so that the order of keys does not count;
    - for any other task with an entry (a line of `--each-line`): the entry as it is;
    - for a task without an entry (`--array`, a single task): the canonical JSON of
      ``[CMD, TASK_ID]``, e.g. ``[["./sim.sh","-v"],7]``.
    """
    if entry is None:
        text = canonical_json([list(cmd or ()), task_id])
    elif kind == "json":
        try:
            text = canonical_json(json.loads(entry))
        except ValueError:  # not JSON after all (a client other than ours): as it is
            text = entry
    else:
        text = entry
    try:
        data = text.encode("utf-8", "surrogateescape")  # a line read with surrogateescape
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:HASH_DIGITS]


def check_placeholders(text: str | None, what: str) -> None:
    if not text:
        return
    for name in _PLACEHOLDER.findall(text):
        if name not in PLACEHOLDERS:
            known = " ".join("%{" + p + "}" for p in PLACEHOLDERS)
            raise UsageError(f"unknown placeholder %{{{name}}} in {what}: use one of {known}")


def fill_placeholders(text: str, values: dict) -> str:
    """TEXT with each known %{NAME} replaced by VALUES[NAME]; a value may be a function of
    no arguments, called only when TEXT uses it (e.g. HASH, which costs a hash)."""
    if "%{" not in text:
        return text

    def one(m):
        value = values.get(m.group(1), m.group(0))
        return str(value() if callable(value) else value)

    return _PLACEHOLDER.sub(one, text)
