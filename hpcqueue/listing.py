"""Task listings, page by page.

A listing goes page by page: the server answers one request with one page (`list_page`),
and the client asks for the next from the page's `next` index.  A page is columns (the
job's own column bytes, sliced), not a dict per task, so that a page of 50,000 tasks
costs the server a few milliseconds and the client turns it into rows (`page_rows`, or
`json_rows` with times as ISO 8601) or JSON lines (`page_ndjson`).
"""

from __future__ import annotations

import re
import sys
from array import array
from itertools import chain, islice
from operator import itemgetter

from hpcqueue.jobs import Job
from hpcqueue.model import CANCELED, FAILED, FINISHED, STATE_CODES, WAITING

PAGE_ROWS = 50_000  # tasks a page holds at most
PAGE_ROWS_ENTRIES = 5_000  # ... when each task carries its entry (a line of any length)
SCAN_INDEXES = 1 << 20  # task indexes a filtered page looks at, at most
#: the columns a page carries once a task has started: attribute, array type code
PAGE_COLUMNS = (("starts", "H"), ("crashes", None), ("retries", None), ("exit", "i"),
                ("worker", "I"), ("t0", "d"), ("t1", "d"))
_CANCELED_WAITING = bytes.maketrans(bytes([WAITING]), bytes([CANCELED]))
_SWAP = sys.byteorder != "little"  # columns travel little-endian


def _gather(column, idx):
    """COLUMN at the indexes IDX (a range or a list), as the same type."""
    if isinstance(idx, range):
        return column[idx.start:idx.stop]
    got = itemgetter(*idx)(column) if idx else ()
    if len(idx) == 1:
        got = (got,)
    return array(column.typecode, got) if isinstance(column, array) else bytearray(got)


def _wire(column) -> bytes:
    if isinstance(column, array):
        if _SWAP:
            column.byteswap()
        return column.tobytes()
    return bytes(column)


def _sparse(mapping: dict, idx) -> list:
    """[[position in IDX, value], ...] of the indexes of IDX that MAPPING holds."""
    if not mapping:
        return []
    if isinstance(idx, range) and len(mapping) < len(idx):
        lo, hi = idx.start, idx.stop
        return sorted([i - lo, v] for i, v in mapping.items() if lo <= i < hi)
    return [[p, mapping[i]] for p, i in enumerate(idx) if i in mapping]


def list_page(job: Job, spans, codes, after: int, limit: int, scan: int = SCAN_INDEXES) -> dict:
    """One page of a listing of JOB: tasks of the index SPANS (inclusive (lo, hi), in order;
    None: every task) in a state of CODES (None: any), from index AFTER on, LIMIT at most.

    The job's counters decide first: states that no task is in are not looked for, and a
    filter that every task passes is no filter, so only a filter that picks some tasks of
    the job scans its state column (SCAN indexes at most per page).  ``next`` is the index
    to ask for next, or None at the end."""
    n = job.n
    if spans is None:
        spans = [(0, n - 1)] if n else []
    if codes is not None:
        present = {c for c in range(len(STATE_CODES)) if job.counts[c]}
        codes = set(codes) & present
        if codes == present:
            codes = None
        elif not codes or job.state is None:
            spans = []
    pattern = None if not codes else re.compile(
        b"[" + b"".join(re.escape(bytes([c])) for c in sorted(codes)) + b"]")
    pieces: list = []
    rows = 0
    nxt = None
    budget = scan
    for span_lo, span_hi in spans:
        lo, hi = max(span_lo, after), min(span_hi, n - 1)
        if lo > hi:
            continue
        if rows >= limit or budget <= 0:
            nxt = lo
            break
        if pattern is None:
            k = min(hi - lo + 1, limit - rows)
            pieces.append(range(lo, lo + k))
            rows += k
            end = lo + k
        else:
            stop = min(hi + 1, lo + budget)
            window = bytes(job.state[lo:stop])
            if job.canceled:
                window = window.translate(_CANCELED_WAITING)
            found = [m.start() + lo for m in islice(pattern.finditer(window), limit - rows)]
            end = found[-1] + 1 if rows + len(found) == limit else stop
            pieces.append(found)
            rows += len(found)
            budget -= end - lo
        if end <= hi:
            nxt = end
            break
    if len(pieces) == 1 and isinstance(pieces[0], range):
        idx = pieces[0]
    else:
        idx = list(chain.from_iterable(pieces))
    page = {"job": job.id, "n": n, "counts": job.summary(), "next": nxt, "rows": len(idx),
            "ids": _wire(_ids_at(job, idx)), "started": job.state is not None}
    if job.state is None:
        page["state"] = bytes([CANCELED if job.canceled else WAITING]) * len(idx)
    else:
        state = bytes(_gather(job.state, idx))
        page["state"] = state.translate(_CANCELED_WAITING) if job.canceled else state
        for name, _ in PAGE_COLUMNS:
            page[name] = _wire(_gather(getattr(job, name), idx))
    if job.entries is not None:
        page["entries"] = (job.entries[idx.start:idx.stop] if isinstance(idx, range)
                           else [job.entries[i] for i in idx])
    page["errors"] = _sparse(job.errors, idx)
    page["retry_at"] = _sparse(job.retry_at, idx)
    return page


def _ids_at(job: Job, idx) -> array:
    ranges = job.ids.ranges
    if len(ranges) == 1:
        start, _, step = ranges[0]
        if isinstance(idx, range):
            return array("q", range(start + idx.start * step, start + idx.stop * step, step))
        return array("q", [start + i * step for i in idx])
    return array("q", map(job.ids.id_at, idx))


def _column(data: bytes, code: str | None):
    if code is None:
        return data
    column = array(code)
    column.frombytes(data)
    if _SWAP:
        column.byteswap()
    return column


def page_rows(page: dict) -> list[dict]:
    """The rows of a page from `list_page`, each as :meth:`Job.task_row` makes it."""
    ids = _column(page["ids"], "q")
    states = page["state"]
    names = [s.value for s in STATE_CODES]
    entries = page.get("entries")
    errors = dict(page.get("errors") or ())
    retry_at = dict(page.get("retry_at") or ())
    cols = {name: _column(page[name], code) for name, code in PAGE_COLUMNS} \
        if page.get("started") else None
    out = []
    for p in range(len(ids)):
        code = states[p]
        row = {"id": ids[p], "state": names[code], "instance": None, "exit_code": None,
               "worker": None, "start": None, "end": None, "crashes": 0, "retries": 0}
        if cols is not None and cols["starts"][p]:
            row["instance"] = cols["starts"][p] - 1
            row["worker"] = cols["worker"][p] or None
            row["start"] = cols["t0"][p] or None
            row["crashes"] = cols["crashes"][p]
            row["retries"] = cols["retries"][p]
            if code in (FINISHED, FAILED):
                row["end"] = cols["t1"][p] or None
                row["exit_code"] = cols["exit"][p]
        if entries is not None:
            row["entry"] = entries[p]
        if p in errors:
            row["error"] = errors[p]
        if p in retry_at:
            row["retry_at"] = retry_at[p]
        out.append(row)
    return out


TIME_KEYS = ("start", "end", "retry_at")  # the row fields that are times


def json_rows(page: dict) -> list[dict]:
    """The rows of `page_rows` as JSON output gives them: times in ISO 8601 (`timefmt.iso`)."""
    from hpcqueue.timefmt import iso

    rows = page_rows(page)
    for row in rows:
        for key in TIME_KEYS:
            if row.get(key) is not None:
                row[key] = iso(row[key])
    return rows


def _stamps(column) -> list[str]:
    """The times of COLUMN as JSON strings (ISO 8601, as `timefmt.iso` writes them), or
    ``null`` where a time is 0.  The date, time and zone of each whole second are worked
    out once per call: a page's tasks share a few."""
    from hpcqueue.timefmt import _second

    forms: dict = {}

    def form(s: int) -> str:
        stamp, zone = _second(s)
        forms[s] = f = '"' + stamp + '.%06d' + zone + '"'
        return f

    get = forms.get
    micros = [round(t * 1_000_000) for t in column]
    return [(get(u // 1_000_000) or form(u // 1_000_000)) % (u % 1_000_000) if u else "null"
            for u in micros]


def page_ndjson(page: dict) -> str:
    """The rows of a page as JSON lines, as ``json.dumps(row)`` writes each row of
    `json_rows`, without making the rows (dumps makes 300,000 rows a second)."""
    import json

    if page.get("entries") is not None or page.get("errors") or page.get("retry_at") \
            or not page.get("started"):
        return "".join(json.dumps(r) + "\n" for r in json_rows(page))
    names = [f'"{s.value}"' for s in STATE_CODES]
    ids = _column(page["ids"], "q")
    starts, crashes, retries, exits, workers, t0, t1 = (
        _column(page[name], code) for name, code in PAGE_COLUMNS)
    state = page["state"]
    ended = [code in (FINISHED, FAILED) for code in state]
    return "".join([
        f'{{"id": {tid}, "state": {names[code]}, "instance": {n - 1}, '
        f'"exit_code": {ex if end else "null"}, "worker": {w or "null"}, '
        f'"start": {a}, "end": {b if end else "null"}, "crashes": {c}, "retries": {r}}}\n'
        if n else
        f'{{"id": {tid}, "state": {names[code]}, "instance": null, "exit_code": null, '
        '"worker": null, "start": null, "end": null, "crashes": 0, "retries": 0}\n'
        for tid, code, n, c, r, ex, w, a, b, end
        in zip(ids, state, starts, crashes, retries, exits, workers, _stamps(t0), _stamps(t1),
               ended)])
