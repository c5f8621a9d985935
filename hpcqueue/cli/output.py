"""How commands print what they report: as a table, JSON, JSON lines, or quietly (ids).

The format comes from the command's own `--output`, else `hpcqueue --output`, else
$HPCQUEUE_OUTPUT, else `table`.  Every reporting command hands its data to `emit` (or to a
`RowWriter`, for listings written page by page):

- ``table``: for people; fitted to the terminal's width (long cells cut with ``…``),
  states coloured when stdout is a terminal (never under $NO_COLOR);
- ``json``: one JSON document, timestamps in ISO 8601 with the zone;
- ``ndjson``: one JSON object a line (a single object is one line);
- ``quiet``: only the ids that matter (the job submitted, the jobs canceled), one a line,
  or nothing.

Commands whose output is content rather than a report (task output, a script, a file)
print it as it is in every format.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Iterable

import click

OUTPUTS = ("table", "json", "ndjson", "quiet")
ENV_OUTPUT = "HPCQUEUE_OUTPUT"

#: style of each state word in tables (jobs, tasks, workers, queues, allocations)
STATE_STYLES = {
    "waiting": "yellow", "queued": "yellow", "assigned": "cyan", "running": "cyan",
    "finished": "green", "active": "green", "connected": "green",
    "failed": "red", "lost": "red", "canceled": "magenta", "paused": "magenta",
    "stopped": "dim", "removed": "dim", "draining": "magenta",
}


# ------------------------------------------------------------------ the format


def _set_global(ctx: click.Context, param, value):
    if value is not None:
        ctx.meta["output"] = value
    return value


global_output_option = click.option(
    "--output", type=click.Choice(OUTPUTS), envvar=ENV_OUTPUT, expose_value=False,
    callback=_set_global, is_eager=True,
    help=f"Output of every command: table (default), json, ndjson (JSON lines) or quiet "
         f"(only ids); ${ENV_OUTPUT} sets it too. A command's own --output wins.",
)


def _resolve(ctx: click.Context, param, value):
    return value or ctx.meta.get("output") or "table"


def output_option(f):
    """A command's own `--output`: the value it gets is the format in force."""
    return click.option(
        "--output", "output", type=click.Choice(OUTPUTS), callback=_resolve,
        help="table, json, ndjson (JSON lines) or quiet (only ids) [default: `hpcqueue "
             f"--output`, ${ENV_OUTPUT}, else table].")(f)


def list_output_option(f):
    return click.option(
        "--output", "output", type=click.Choice(OUTPUTS), callback=_resolve,
        help="table, a JSON array, JSON lines (one object a line) or quiet (only ids); all "
             f"are written as the rows come [default: `hpcqueue --output`, ${ENV_OUTPUT}, "
             "else table].")(f)


def current(ctx: click.Context | None = None) -> str:
    """The format in force for a command that has no `--output` of its own."""
    ctx = ctx or click.get_current_context(silent=True)
    return (ctx.meta.get("output") if ctx is not None else None) or "table"


def is_json(output: str) -> bool:
    return output in ("json", "ndjson")


# ------------------------------------------------------------------ writing


def emit(output: str, data, table: Callable[[], None] | None = None,
         ids: Iterable | None = None) -> None:
    """DATA in the format OUTPUT: TABLE() prints it for people (default: nothing), IDS are
    what quiet prints."""
    if output == "json":
        print_json(data)
    elif output == "ndjson":
        for item in data if isinstance(data, list) else [data]:
            sys.stdout.write(json.dumps(item, default=str) + "\n")
    elif output == "quiet":
        for i in ids or ():
            sys.stdout.write(f"{i}\n")
    elif table is not None:
        table()
    sys.stdout.flush()


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def with_times(row: dict, *keys: str) -> dict:
    """ROW with the timestamps (seconds since the epoch) under KEYS in ISO 8601."""
    from hpcqueue.timefmt import iso

    return {k: iso(v) if k in keys and isinstance(v, (int, float)) else v
            for k, v in row.items()}


def when(ts) -> str | None:
    """A timestamp for people: date and time, local."""
    if not ts:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def when_short(ts, now: float | None = None) -> str | None:
    """A timestamp for a table column: the time alone today, else month, day and time."""
    if not ts:
        return None
    t = time.localtime(ts)
    if time.strftime("%Y-%m-%d", t) == time.strftime("%Y-%m-%d", time.localtime(now)):
        return time.strftime("%H:%M:%S", t)
    return time.strftime("%m-%d %H:%M", t)


# ------------------------------------------------------------------ tables


def colour_wanted(stream=None) -> bool:
    """Colour for STREAM (stdout): on a terminal or under $FORCE_COLOR, never under
    $NO_COLOR (https://no-color.org: any non-empty value)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def fit_widths(widths: list[int], mins: list[int], room: int) -> list[int]:
    """Column widths that fit in ROOM: the widest columns are cut first, none below its
    MINS width, unless even those do not fit; then every column is cut alike."""
    if sum(widths) <= room:
        return list(widths)
    floor = [min(m, w) for m, w in zip(mins, widths)]
    if sum(floor) > room:  # even the narrowest do not fit: every column is cut alike
        floor = [1] * len(widths)
    lo, hi = 0, max(widths)  # the largest cap C with sum(max(floor, min(w, C))) <= room
    while lo < hi:
        cap = (lo + hi + 1) // 2
        if sum(max(f, min(w, cap)) for f, w in zip(floor, widths)) <= room:
            lo = cap
        else:
            hi = cap - 1
    return [max(f, min(w, lo)) for f, w in zip(floor, widths)]


def table_widths(columns: list[str], rows: list[list[str]], width: int, gap: int = 2) -> list[int]:
    """The widths of a table's columns in WIDTH: the first column (what the rows are) is
    cut last."""
    room = width - gap * (len(columns) - 1)
    natural = [max([len(c)] + [len(r[k]) for r in rows]) for k, c in enumerate(columns)]
    mins = [max(len(c), 8) for c in columns]
    mins[0] = max(mins[0], min(natural[0], room // 3))
    return fit_widths(natural, mins, room)


def _cells(rows) -> list[list[str]]:
    return [["-" if v is None else str(v) for v in r] for r in rows]


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((80, 40)).columns


def _paint(text: str, style: str) -> str:
    """TEXT in a style of STATE_STYLES (a colour, or dim)."""
    if not style:
        return text
    return click.style(text, dim=True) if style == "dim" else click.style(text, fg=style)


def _line(cells: list[str], widths: list[int], columns: list[str] | None, colour: bool,
          gap: int = 2, header: bool = False) -> str:
    """One line of a table: each cell cut with `…` to its width and padded (the last one
    not), STATE cells coloured and the header bold when COLOUR."""
    parts = []
    last = len(cells) - 1
    for k, (c, w) in enumerate(zip(cells, widths)):
        text = c if len(c) <= w else c[:max(0, w - 1)] + "…"
        text = text.ljust(w) if k < last else text
        if colour and not header and columns is not None and columns[k] == "STATE":
            text = _paint(text, state_style(c))
        parts.append(text)
    line = (" " * gap).join(parts).rstrip()
    return (click.style(line, bold=True) if header and colour else line) + "\n"


def print_table(columns: list[str], rows: list[list], title: str | None = None) -> None:
    """A table as wide as the terminal at most: cells too long are cut with `…`.  Written
    by hand, not with rich: `job list` and `job info` are answered in tens of
    milliseconds, and importing rich's tables alone takes about as long."""
    colour = colour_wanted()
    cells = _cells(rows)
    widths = table_widths(columns, cells, _width())
    out = [title + "\n"] if title else []
    out.append(_line(columns, widths, None, colour, header=True))
    out += [_line(r, widths, columns, colour) for r in cells]
    sys.stdout.write("".join(out))


def print_fields(pairs: list[tuple[str, object]]) -> None:
    """KEY VALUE lines; a long value wraps under itself."""
    colour = colour_wanted()
    keys = max((len(k) for k, _ in pairs), default=0)
    room = max(10, _width() - keys - 2)
    out = []
    for k, v in pairs:
        text = "-" if v is None else str(v)
        style = state_style(text) if k == "state" else ""
        pieces = [text[i:i + room] for i in range(0, len(text), room)] or [""]
        for n, piece in enumerate(pieces):
            lead = (click.style(k.ljust(keys), bold=True) if colour else k.ljust(keys)) \
                if n == 0 else " " * keys
            shown = _paint(piece, style) if colour and style else piece
            out.append(f"{lead}  {shown}".rstrip() + "\n")
    sys.stdout.write("".join(out))


def state_style(state: str) -> str:
    return STATE_STYLES.get(state.split("+")[0], "")


class RowWriter:
    """Rows written as they come: JSON lines, a JSON array, ids (quiet), or a table.

    A table that fits in one page of the server and on the screen is a rich table; a longer
    one is written as fixed-width lines under one header (a rich table needs every row
    first), its widths from the first rows and cut to the terminal's width.  TIMES: the
    keys of the rows that hold timestamps, given in ISO 8601 in JSON."""

    def __init__(self, output: str, columns: list[str], cells, times: tuple[str, ...] = ()):
        self.output, self.columns, self.cells, self.times = output, columns, cells, times
        self.out = sys.stdout
        self.started = False
        self.widths: list[int] | None = None
        self.colour = output == "table" and colour_wanted(self.out)

    def _json(self, r: dict) -> str:
        return json.dumps(with_times(r, *self.times) if self.times else r, default=str)

    def write(self, rows: list[dict], last: bool = False, text: str | None = None) -> None:
        """ROWS (TEXT: the same as JSON lines already, for ndjson); LAST: no page follows."""
        out = self.out
        if self.output == "ndjson":
            out.write(text if text is not None else
                      "".join(self._json(r) + "\n" for r in rows))
        elif self.output == "json":
            if rows:
                lead = ",\n" if self.started else "[\n"
                out.write(lead + ",\n".join(self._json(r) for r in rows))
                self.started = True
        elif self.output == "quiet":
            out.write("".join(f"{r['id']}\n" for r in rows))
        else:
            cells = _cells(self.cells(r) for r in rows)
            if not self.started and last and len(cells) < _screen_lines():
                self.started = True
                self.widths = []
                return print_table(self.columns, cells)
            if self.widths is None:
                self.widths = table_widths(self.columns, cells, _width(), gap=1)
            if not self.started:
                self.started = True
                out.write(self._line(self.columns, header=True))
            out.write("".join(self._line(r) for r in cells))
        out.flush()

    def _line(self, cells: list[str], header: bool = False) -> str:
        return _line(cells, self.widths, self.columns, self.colour, gap=1, header=header)

    def close(self) -> None:
        if self.output == "json":
            self.out.write("\n]\n" if self.started else "[]\n")
        elif self.output == "table" and not self.started:
            print_table(self.columns, [])
        self.out.flush()


def _screen_lines() -> int:
    import shutil

    return shutil.get_terminal_size((80, 40)).lines - 2
