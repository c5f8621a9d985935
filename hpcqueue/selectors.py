"""Id selectors: which jobs (`1-3,7`, `last`, `all`) and which tasks (`1-100,200`) a command
means.

One parser for the command line and the server: the CLI parses a selector to refuse a
mistake before it connects, sends the text, and the server parses it again (nothing from the
network is trusted).  Resolving a selector never loops over the ids it spans: job ranges are
cut out of the sorted list of job ids with bisect, and task ranges become spans of task
*indexes* from the job's id ranges (see :func:`task_spans`).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Sequence

from hpcqueue.exceptions import NotFound, UsageError

MAX_ID = 2**63 - 1  # the largest job or task id a selector may name
MAX_SELECTOR = 100_000  # characters of a selector
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")

JOB_HINT = "give job ids as e.g. 3, 1-3,7, last or all"
TASK_HINT = "give task ids as e.g. 7, 1-100 or 1-100,200"


def _ranges(text: str, what: str, hint: str, words: Sequence[str] = ()) -> tuple:
    """((lo, hi) ranges, sorted and merged), and the words of WORDS that TEXT holds."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"no {what} given: {hint}")
    if len(text) > MAX_SELECTOR:
        raise UsageError(f"the {what} selector is longer than {MAX_SELECTOR:,} characters")
    out: list[tuple[int, int]] = []
    found: list[str] = []
    for raw in text.split(","):
        part = raw.strip()
        if part in words:
            found.append(part)
            continue
        m = _RANGE.fullmatch(part)
        if not m:
            raise UsageError(f"{part!r} in {text!r} is not a {what[:-1]} id or range: {hint}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"the range {part!r} ends before it starts: write it low to "
                             f"high, e.g. {hi}-{lo}")
        if hi > MAX_ID:
            raise UsageError(f"{part!r}: an id is at most {MAX_ID}")
        out.append((lo, hi))
    return tuple(_merged(out)), found


def _merged(pairs: list) -> list[tuple[int, int]]:
    """The inclusive (lo, hi) PAIRS sorted, with those that overlap or touch joined."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(pairs):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def in_spans(spans, x: int) -> bool:
    """Whether X is in one of SPANS (sorted, disjoint inclusive (lo, hi) pairs): a bisect,
    not a scan."""
    k = bisect_right(spans, (x, float("inf"))) - 1
    return k >= 0 and spans[k][0] <= x <= spans[k][1]


def format_ranges(ranges) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


# ------------------------------------------------------------------ jobs


@dataclass(frozen=True)
class JobSelector:
    """Jobs by id ranges, plus the last job, or every job."""

    ranges: tuple = ()
    last: bool = False
    all: bool = False

    def __str__(self) -> str:
        if self.all:
            return "all"
        parts = [format_ranges(self.ranges)] if self.ranges else []
        return ",".join(parts + (["last"] if self.last else []))

    def single(self):
        """The one job this names (an id, or "last"), or None if it may name several."""
        if self.all:
            return None
        if self.last and not self.ranges:
            return "last"
        if not self.last and len(self.ranges) == 1 and self.ranges[0][0] == self.ranges[0][1]:
            return self.ranges[0][0]
        return None

    def resolve(self, ids: Sequence[int]) -> list[int]:
        """The ids of IDS (sorted, those the server holds) this names, in order.  A single id
        or `last` that names no job raises NotFound, and so does a range of none."""
        if self.all:
            return list(ids)
        out: list[int] = []
        for lo, hi in self.ranges:
            a, b = bisect_left(ids, lo), bisect_right(ids, hi)
            if a == b:
                what = f"job {lo}" if lo == hi else f"job in {lo}-{hi}"
                raise NotFound(f"no {what}: `hpcqueue job list` shows the jobs")
            out.extend(ids[a:b])
        if self.last:
            if not ids:
                raise NotFound("there are no jobs yet")
            if not out or out[-1] != ids[-1]:
                out.append(ids[-1])
        return out


def parse_jobs(text) -> JobSelector:
    """`3`, `1-3,7`, `last`, `1-3,last` or `all` (alone)."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    ranges, words = _ranges(text, "jobs", JOB_HINT, ("last", "all"))
    if "all" in words:
        if len(words) > 1 or ranges:
            raise UsageError(f"{text!r}: `all` stands alone (it names every job)")
        return JobSelector(all=True)
    return JobSelector(ranges=ranges, last=bool(words))


def one_job(text):
    """A job id or "last" from a selector that must name one job."""
    sel = parse_jobs(text)
    one = sel.single()
    if one is None:
        raise UsageError(f"{text!r} names several jobs, and this command takes one: give one "
                         "job id or `last`")
    return one


# ------------------------------------------------------------------ tasks


def parse_tasks(text) -> tuple:
    """`7`, `1-100` or `1-100,200` as sorted, merged (lo, hi) ranges of task ids."""
    return _ranges(text, "tasks", TASK_HINT)[0]


def task_spans(selected, job_ranges) -> list[tuple[int, int]]:
    """The task indexes (inclusive (lo, hi) spans, in order) of a job whose ids are
    JOB_RANGES ((start, stop, step), sorted, as :class:`~hpcqueue.model.IdRanges` keeps them)
    that the id ranges SELECTED name.  O(len(selected) * len(job_ranges)): no loop per id."""
    starts, count = [], 0
    for start, stop, step in job_ranges:
        starts.append(count)
        count += (stop - start) // step + 1
    spans: list[tuple[int, int]] = []
    for lo, hi in selected:
        for base, (start, stop, step) in zip(starts, job_ranges):
            a, b = max(lo, start), min(hi, stop)
            if a > b:
                continue
            first = -(-(a - start) // step)  # the first index of this range at or past a
            last = (b - start) // step
            if first <= last:
                spans.append((base + first, base + last))
    return _merged(spans)
