"""`hpcqueue journal export|prune|flush`."""

from __future__ import annotations

import sys

import click

from hpcqueue.cli.common import request, server_dir_option


@click.group()
@server_dir_option
def journal():
    """Inspect and maintain a server journal."""


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
def export(path):
    """Print every event of a journal as one JSON line (NDJSON)."""
    from hpcqueue.journal.tools import export as do_export

    do_export(path, sys.stdout)


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
def prune(path):
    """Drop the events of finished jobs (the server must be stopped)."""
    from hpcqueue.journal.tools import prune as do_prune

    jobs, before, after = do_prune(path)
    click.echo(f"dropped {jobs} finished job(s): {before} events -> {after}")


@journal.command()
@server_dir_option
@click.pass_context
def flush(ctx):
    """Make the running server write and fsync its journal now."""
    path = request(ctx, "journal_flush")["journal"]
    click.echo(f"journal {path} flushed")
