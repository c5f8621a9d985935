"""`hpcqueue server start|stop|info`."""

from __future__ import annotations

import click

from hpcqueue.cli.common import (
    DURATION, get_server_dir, output_option, print_fields, print_json, request,
    server_dir_option, when,
)


@click.group()
@server_dir_option
def server():
    """Start, stop and inspect the server."""


@server.command()
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
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.pass_context
def start(ctx, host, port, journal, journal_fsync, journal_upgrade, heartbeat, verbose):
    """Run a server in the foreground (under tmux or screen for long runs)."""
    import os
    from pathlib import Path

    from hpcqueue.cli import logs
    from hpcqueue.server.config import ServerConfig
    from hpcqueue.server.lifecycle import run_server

    logs.setup(verbose)
    cfg = ServerConfig(
        server_dir=get_server_dir(ctx), host=host, port=port,
        journal=Path(os.path.abspath(os.path.expanduser(journal))) if journal else None,
        fsync_interval=journal_fsync, heartbeat=max(0.5, heartbeat),
        journal_upgrade=journal_upgrade,
    )
    run_server(cfg)


@server.command()
@server_dir_option
@click.pass_context
def stop(ctx):
    """Stop the server (its workers stop too)."""
    request(ctx, "server_stop")
    click.echo(f"server in {get_server_dir(ctx)} is stopping")


@server.command()
@server_dir_option
@output_option
@click.pass_context
def info(ctx, output):
    """Where the server runs and what it holds."""
    r = request(ctx, "server_info")
    r.pop("ok", None)
    if output == "json":
        return print_json(r)
    print_fields([
        ("server id", r["server_id"]), ("host", r["host"]), ("port", r["port"]),
        ("pid", r["pid"]), ("version", r["version"]), ("started", when(r["started"])),
        ("server dir", r["server_dir"]), ("journal", r["journal"]),
        ("jobs", r["jobs"]), ("waiting tasks", r["waiting"]), ("workers", r["workers"]),
    ])
