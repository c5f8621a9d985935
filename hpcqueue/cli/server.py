"""`hpcqueue server start|stop|info|http-token`."""

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
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.pass_context
def start(ctx, host, port, journal, journal_fsync, journal_upgrade, heartbeat, dispatch,
          http_port, http_host, http_cert, http_key, http_insecure, verbose):
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
        journal_upgrade=journal_upgrade, dispatch=dispatch,
        http_port=http_port, http_host=http_host,
        http_cert=Path(os.path.abspath(http_cert)) if http_cert else None,
        http_key=Path(os.path.abspath(http_key)) if http_key else None,
        http_insecure=http_insecure,
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


@server.command("http-token")
@server_dir_option
@click.option("--url", "url", is_flag=True, help="Print the HTTP API's URL instead.")
@click.pass_context
def http_token(ctx, url):
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
    click.echo(record.http_url if url else record.http_token)
