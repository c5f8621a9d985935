"""Pieces every command uses: the server-dir option, requests, output; and the command
class and logging options of the long-running commands (server start, worker start)."""

from __future__ import annotations

import json
import os
import sys

import click

from hpcqueue.access import ENV_SERVER_DIR, server_dir
from hpcqueue.exceptions import HpcqueueError, NotFound, RequestError, UsageError
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


def verbose_option(f):
    return click.option("-v", "--verbose", count=True,
                        help="Log more: -v debug lines (connections, polls), -vv every "
                             "message too.")(f)


def log_format_option(f):
    return click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                        show_default=True,
                        help="json: one JSON object a line (time, level, logger, message).")(f)


def _wants_json(argv: list[str]) -> bool:
    for i, arg in enumerate(argv):
        if arg == "--log-format" and i + 1 < len(argv):
            return argv[i + 1] == "json"
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1] == "json"
    return os.environ.get("HPCQUEUE_LOG_FORMAT") == "json"


class ServiceCommand(click.Command):
    """A long-running command (`server start`, `worker start`).

    Its failures, even a bad flag or environment value found before it runs, come out in
    the log format asked for (one JSON object under --log-format json), and go into its
    log file too.  Under --check-args anything wrong exits 1, a bad value included."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)  # parsing consumes the list it is given: keep one to look at
        try:
            return super().make_context(info_name, list(argv), parent=parent, **extra)
        except (click.UsageError, HpcqueueError) as e:
            json_mode, checking = _wants_json(argv), "--check-args" in argv
            if not (json_mode or checking):
                raise
            from hpcqueue.cli import logs

            text = " ".join(str(e.format_message() if isinstance(e, click.ClickException)
                                else e).split())
            if isinstance(e, click.UsageError):
                where = e.ctx.command_path if e.ctx is not None else info_name
                text += f" (see `{where} --help`)"
            if json_mode:
                logs.failure(text, "json")
            else:
                click.echo(f"hpcqueue: error: {text}", err=True)
            code = 1 if checking else 2 if isinstance(e, click.UsageError) else e.exit_code
            raise click.exceptions.Exit(code) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HpcqueueError as e:
            from hpcqueue.cli import logs

            fmt = ctx.params.get("log_format") or "text"
            logs.failure(" ".join(str(e).split()), fmt)
            if fmt == "json":
                raise click.exceptions.Exit(e.exit_code) from None
            raise


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
