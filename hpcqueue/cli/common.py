"""Pieces every command uses: the server-dir option, requests, selectors; and the command
class and logging options of the long-running commands (server start, worker start)."""

from __future__ import annotations

import os
import sys

import click

from hpcqueue.access import ENV_SERVER_DIR, server_dir
from hpcqueue.client import ENV_PAGE_ROWS  # noqa: F401 - tests page small listings
from hpcqueue.exceptions import HpcqueueError, UsageError
from hpcqueue.model import parse_duration


def _set_server_dir(ctx: click.Context, param, value):
    if value is not None:
        ctx.meta["server_dir"] = value
    return value


server_dir_option = click.option(
    "--server-dir", type=click.Path(file_okay=False), envvar=ENV_SERVER_DIR,
    expose_value=False, callback=_set_server_dir, is_eager=True,
    help=f"Server dir (default ${ENV_SERVER_DIR}, else settings.server-dir of the config "
         "files, else ~/.hpcqueue-server).",
)

limit_option = click.option("--limit", type=click.IntRange(min=1), metavar="N",
                            help="At most N rows.")


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
    """One job: its id or `last` (a selector naming several jobs is refused)."""

    name = "ID"

    def __init__(self, allow_all: bool = False):
        self.allow_all = allow_all  # (older callers; JobSelectorType takes several jobs)

    def convert(self, value, param, ctx):
        from hpcqueue.selectors import one_job

        if isinstance(value, int):
            return value
        try:
            return one_job(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from hpcqueue.cli.completion import job_ids

        return job_ids(ctx, param, incomplete)


class JobSelectorType(click.ParamType):
    """Jobs: `3`, `1-3,7`, `last` or `all`; sent to the server as its text, normalized."""

    name = "JOBS"

    def convert(self, value, param, ctx):
        from hpcqueue.selectors import parse_jobs

        try:
            return str(parse_jobs(value))
        except UsageError as e:
            self.fail(str(e), param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from hpcqueue.cli.completion import job_selectors

        return job_selectors(ctx, param, incomplete)


class TaskSelectorType(click.ParamType):
    """Task ids: `7`, `1-100` or `1-100,200`; sent as its text, normalized."""

    name = "RANGE"

    def convert(self, value, param, ctx):
        from hpcqueue.selectors import format_ranges, parse_tasks

        try:
            return format_ranges(parse_tasks(value))
        except UsageError as e:
            self.fail(str(e), param, ctx)


def request(ctx: click.Context, op: str, timeout: float | None = 60.0, **fields) -> dict:
    """Send one request to the server and return its reply, or raise its error."""
    from hpcqueue.client import Client

    with Client(get_server_dir(ctx), timeout=timeout) as client:
        return client.request(op, **fields)


def check_reply(reply) -> dict:
    """REPLY if the server accepted the request, else the typed error it stands for."""
    from hpcqueue.client import check_reply

    return check_reply(reply)


def pages(ctx: click.Context, op: str, count, limit: int | None = None, **fields):
    """The pages of a paged listing (`jobs`, `tasks`): see :meth:`hpcqueue.Client.pages`."""
    from hpcqueue.client import Client

    yield from Client(get_server_dir(ctx)).pages(op, count, limit, **fields)


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (`| head`): stop quietly, exit 0.  Stdout becomes
    /dev/null, so that the flush at exit does not complain."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0
