"""`hpcqueue server start|stop|info|http-token`.

`server start` runs in the foreground, or with --daemon detaches once the server listens.
Every option can come from HPCQUEUE_<OPTION> (hpcqueue/cli/envconfig.py); --check-args
shows each setting with where it came from and checks it without starting anything.
"""

from __future__ import annotations

import os

import click

from hpcqueue.calls import DEFAULT_RESULT_LIMIT
from hpcqueue.cli.common import (
    DURATION, ServiceCommand, get_server_dir, log_format_option, request, server_dir_option,
    verbose_option,
)
from hpcqueue.cli.output import current, emit, output_option, print_fields, when, with_times
from hpcqueue.cli.envconfig import from_env

STOP_WAIT = 30.0  # seconds `server stop` waits for a server on this host to end


@click.group()
@server_dir_option
def server():
    """Start, stop and inspect the server."""


def _abspath(path):
    from pathlib import Path

    return Path(os.path.abspath(os.path.expanduser(path))) if path else None


@from_env
@server.command(cls=ServiceCommand)
@server_dir_option
@click.option("--host", default="0.0.0.0", show_default=True,
              help="Address to listen on (workers on other nodes must reach it).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--journal", type=click.Path(dir_okay=False),
              help="Append every state change to this file; a restart on it carries on.")
@click.option("--journal-fsync", type=DURATION, default="1s", show_default=True,
              help="How often unsynced journal data is fsynced.")
@click.option("--journal-upgrade", is_flag=True,
              help="Upgrade a journal written by an older hpcqueue (a backup is kept).")
@click.option("--heartbeat", type=DURATION, default="8s", show_default=True,
              help="Worker heartbeat interval; a worker silent for 3 of them is lost.")
@click.option("--dispatch", type=click.Choice(["first-free", "round-robin"]),
              default="first-free", show_default=True,
              help="first-free fills free slots (with prefetch); round-robin spreads tasks "
                   "evenly over the connected workers.")
@click.option("--http-port", type=click.IntRange(0, 65535),
              help="Also serve the HTTP API on this port (0 picks a free one).")
@click.option("--http-host", default="127.0.0.1", show_default=True,
              help="Address of the HTTP API; anything but loopback needs TLS or "
                   "--http-insecure.")
@click.option("--http-cert", type=click.Path(dir_okay=False),
              help="TLS certificate (PEM) for the HTTP API.")
@click.option("--http-key", type=click.Path(dir_okay=False),
              help="TLS private key (PEM) for the HTTP API.")
@click.option("--http-insecure", is_flag=True,
              help="Serve plain HTTP on a non-loopback address (the token travels in clear).")
@click.option("--result-limit", type=click.IntRange(min=0), default=DEFAULT_RESULT_LIMIT,
              show_default=True, metavar="BYTES",
              help="Bytes of a Python call's result the server keeps; a bigger result is "
                   "written to a file in the task's folder and the server keeps its path.")
@click.option("--daemon", is_flag=True,
              help="Detach once the server listens; it logs to --log-file, else to server.log "
                   "in its instance dir.")
@click.option("--pid-file", type=click.Path(dir_okay=False),
              help="Keep the server's pid in this file while it runs.")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Log into this file instead of server.log in the instance dir.")
@log_format_option
@verbose_option
@click.option("--check-args", is_flag=True,
              help="Check the settings, print each with where it came from, and exit 0 if a "
                   "server would start with them, 1 if not. Starts nothing.")
@click.option("--write-config-defaults", is_flag=True,
              help="Print an `export HPCQUEUE_...=...` line for every setting, as it would be "
                   "used now, to save and source.")
@click.pass_context
def start(ctx, host, port, journal, journal_fsync, journal_upgrade, heartbeat, dispatch,
          http_port, http_host, http_cert, http_key, http_insecure, result_limit, daemon,
          pid_file, log_file, log_format, verbose, check_args, write_config_defaults):
    """Run a server: in the foreground (under tmux or screen for long runs), or with
    --daemon in the background."""
    from hpcqueue.cli import logs
    from hpcqueue.server.config import ServerConfig
    from hpcqueue.server.lifecycle import run_server

    cfg = ServerConfig(
        server_dir=get_server_dir(ctx), host=host, port=port,
        journal=_abspath(journal),
        fsync_interval=journal_fsync, heartbeat=max(0.5, heartbeat),
        journal_upgrade=journal_upgrade, dispatch=dispatch,
        http_port=http_port, http_host=http_host,
        http_cert=_abspath(http_cert), http_key=_abspath(http_key),
        http_insecure=http_insecure, result_limit=result_limit,
        pid_file=_abspath(pid_file), log_file=_abspath(log_file),
    )
    # without --log-file the log goes into server.log in the instance dir, once it is made
    open_log = None if log_file else logs.add_file
    if write_config_defaults:
        from hpcqueue.cli.envconfig import export_lines

        click.echo("# hpcqueue server start: every setting as it would be used now. Save, "
                   "edit, `. ./FILE`;\n# then `hpcqueue server start` (a flag still wins over "
                   "its variable).")
        for line in export_lines(ctx, {"server_dir": cfg.server_dir}):
            click.echo(line)
        return 0
    if check_args:
        return _check_args(ctx, cfg, current(ctx))
    if daemon:
        return _start_daemon(cfg, open_log, verbose, log_format, current(ctx))
    logs.setup(verbose, log_format, console=True, file=cfg.log_file)
    run_server(cfg, open_log=open_log)
    return 0


def _check_args(ctx, cfg, output: str) -> int:
    from hpcqueue.cli.envconfig import settings
    from hpcqueue.exceptions import HpcqueueError
    from hpcqueue.server.config import check

    found = settings(ctx, {"server_dir": cfg.server_dir})
    if output != "table":
        problems = check(cfg)
        emit(output, {"ok": not problems, "problems": problems,
                      "settings": [{"option": max(p.opts, key=len), "value": text,
                                    "source": src} for p, text, src in found]})
        return 1 if problems else 0
    rows = [(max(p.opts, key=len), "-" if text is None else text, src)
            for p, text, src in found]
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    for flag, text, src in rows:
        click.echo(f"{flag:<{widths[0]}}  {text:<{widths[1]}}  {src}")
    problems = check(cfg)
    if problems:
        raise HpcqueueError("; ".join(problems))
    click.echo("ok: a server would start with these settings")
    return 0


# --------------------------------------------------------------------- --daemon


def _start_daemon(cfg, open_log, verbose: int, log_format: str, output: str) -> int:
    """Fork a detached server, wait until it listens (or fails), and return."""
    import json

    from hpcqueue.exceptions import HpcqueueError

    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the middle process: a new session, the server in a child of it
        try:
            os.close(r)
            os.setsid()
            if os.fork() == 0:
                _serve_detached(cfg, open_log, verbose, log_format, w)  # does not return
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as pipe:
        line = pipe.readline()
    try:
        said = json.loads(line) if line else {}
    except ValueError:
        said = {}
    if not said.get("ok"):
        where = cfg.log_file or f"server.log in the newest instance dir of {cfg.server_dir}"
        raise HpcqueueError(said.get("error") or "the server ended while starting, without "
                            f"saying why: see {where}")
    said.pop("ok", None)
    emit(output, said, ids=[said["server_id"]], table=lambda: click.echo(
        f"server {said['server_id']} listening on {said['host']}:{said['port']} "
        f"(pid {said['pid']}; log {said['log_file']})"))
    return 0


def _serve_detached(cfg, open_log, verbose: int, log_format: str, w: int) -> None:
    """The daemon: no terminal; logs to its files; tells the waiting command through `w`
    that it listens, or why it could not start.  Ends the process."""
    import json
    import logging

    from hpcqueue.cli import logs
    from hpcqueue.exceptions import HpcqueueError
    from hpcqueue.server.lifecycle import run_server

    pipe = {"fd": w}

    def tell(message: dict) -> None:
        if pipe["fd"] is not None:
            try:
                os.write(pipe["fd"], json.dumps(message).encode() + b"\n")
                os.close(pipe["fd"])
            except OSError:
                pass
            pipe["fd"] = None

    def ready(server) -> None:
        info = server.core.info
        tell({"ok": True, "server_id": server.server_id, "host": info["host"],
              "port": server.port, "pid": os.getpid(), "log_file": info.get("log_file")})

    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        logs.setup(verbose, log_format, console=False, file=cfg.log_file)
        run_server(cfg, ready, open_log)
    except HpcqueueError as e:
        message = " ".join(str(e).split())
        logs.failure(message, log_format)
        tell({"error": message})
        code = 1
    except BaseException as e:  # a bug of ours: the traceback goes to the log
        logging.getLogger("hpcqueue.server").exception("the server failed")
        tell({"error": f"the server failed ({type(e).__name__}: {e}); the log has the "
                       "traceback: please report it"})
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


# --------------------------------------------------------------------- stop, info


@server.command()
@server_dir_option
@output_option
@click.pass_context
def stop(ctx, output):
    """Stop the server (its workers stop too); on this host, wait until it has ended."""
    import socket
    import time

    from hpcqueue.access import pid_alive, read_access
    from hpcqueue.exceptions import HpcqueueError

    d = get_server_dir(ctx)
    record = read_access(d)
    request(ctx, "server_stop")
    said = {"server_id": record.server_id, "server_dir": str(d), "host": record.hostname}
    if record.hostname != socket.gethostname():
        return emit(output, dict(said, stopped=False), ids=[record.server_id], table=lambda:
                    click.echo(f"server in {d} is stopping (it runs on {record.hostname})"))
    deadline = time.monotonic() + STOP_WAIT
    while pid_alive(record.pid):
        if time.monotonic() > deadline:
            raise HpcqueueError(f"the server in {d} (pid {record.pid}) was told to stop but "
                                f"still runs after {STOP_WAIT:.0f}s: see its log; `kill "
                                f"{record.pid}` ends it")
        time.sleep(0.05)
    emit(output, dict(said, stopped=True), ids=[record.server_id],
         table=lambda: click.echo(f"server {record.server_id} in {d} stopped"))


@server.command()
@server_dir_option
@output_option
@click.pass_context
def info(ctx, output):
    """Where the server runs and what it holds."""
    r = request(ctx, "server_info")
    r.pop("ok", None)
    if output != "table":
        return emit(output, with_times(r, "started"), ids=[r["server_id"]])
    print_fields([
        ("server id", r["server_id"]), ("host", r["host"]), ("port", r["port"]),
        ("pid", r["pid"]), ("version", r["version"]), ("started", when(r["started"])),
        ("server dir", r["server_dir"]), ("instance dir", r.get("instance_dir")),
        ("log file", r.get("log_file")), ("pid file", r.get("pid_file")),
        ("journal", r["journal"]),
        ("jobs", r["jobs"]), ("waiting tasks", r["waiting"]),
        ("delayed retries", r.get("delayed", 0)), ("workers", r["workers"]),
    ])


@server.command("http-token")
@server_dir_option
@click.option("--url", "url", is_flag=True, help="Print the HTTP API's URL instead.")
@output_option
@click.pass_context
def http_token(ctx, url, output):
    """Print the HTTP API's bearer token (new at each server start), from the access record.

    \b
      curl -H "Authorization: Bearer $(hpcqueue server http-token)" \\
           --data-binary 'echo hi' "$(hpcqueue server http-token --url)/jobs"
    """
    from hpcqueue.access import read_access
    from hpcqueue.exceptions import HpcqueueError

    directory = get_server_dir(ctx)
    record = read_access(directory)
    if not record.http_token:
        raise HpcqueueError(f"the server in {directory} does not serve HTTP: start it with "
                            "`hpcqueue server start --http-port PORT`")
    value = record.http_url if url else record.http_token
    if output in ("json", "ndjson"):
        return emit(output, {"url": record.http_url} if url else {"token": value})
    click.echo(value)  # the value alone is what table and quiet print
