"""Pieces every command uses: the server-dir option, requests, output."""

from __future__ import annotations

import json
import sys

import click

from hpcqueue.access import ENV_SERVER_DIR, server_dir
from hpcqueue.exceptions import NotFound, RequestError, UsageError
from hpcqueue.model import parse_duration


def _set_server_dir(ctx: click.Context, param, value):
    if value is not None:
        ctx.meta["server_dir"] = value
    return value


server_dir_option = click.option(
    "--server-dir", type=click.Path(file_okay=False), envvar=ENV_SERVER_DIR,
    expose_value=False, callback=_set_server_dir, is_eager=True,
    help=f"Server dir (default ${ENV_SERVER_DIR} or ~/.hpcqueue-server).",
)

output_option = click.option(
    "--output", "output", type=click.Choice(["table", "json"]), default="table",
    show_default=True, help="Output format.",
)


def get_server_dir(ctx: click.Context):
    return server_dir(ctx.meta.get("server_dir"))


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)


DURATION = Duration()


class JobRef(click.ParamType):
    """A job id, `last`, or (where allowed) `all`."""

    name = "ID"

    def __init__(self, allow_all: bool = False):
        self.allow_all = allow_all

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "last" or (self.allow_all and value == "all"):
            return value
        try:
            return int(value)
        except ValueError:
            extra = ", `last` or `all`" if self.allow_all else " or `last`"
            self.fail(f"{value!r} is not a job id: give a number{extra}", param, ctx)


def request(ctx: click.Context, op: str, timeout: float | None = 60.0, **fields) -> dict:
    """Send one request to the server and return its reply, or raise its error."""
    from hpcqueue.access import connect

    conn = connect(get_server_dir(ctx), timeout=timeout)
    try:
        conn.send({"op": op, **fields})
        reply = conn.recv()
    finally:
        conn.close()
    return check_reply(reply)


def check_reply(reply) -> dict:
    if not isinstance(reply, dict):
        raise RequestError("the server sent a reply that is not a map")
    if not reply.get("ok"):
        kind = NotFound if reply.get("kind") == "NotFound" else RequestError
        raise kind(reply.get("error") or "the server refused the request")
    return reply


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(columns: list[str], rows: list[list], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*["-" if v is None else str(v) for v in r])
    Console().print(table)


def print_fields(pairs: list[tuple[str, object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in pairs:
        table.add_row(k, "-" if v is None else str(v))
    Console().print(table)


def when(ts) -> str | None:
    if not ts:
        return None
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
