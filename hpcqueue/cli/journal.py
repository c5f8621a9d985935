"""`hpcqueue journal export|stream|check|repair|upgrade|compact|prune|flush`."""

from __future__ import annotations

import sys

import click

from hpcqueue.cli.common import request, server_dir_option
from hpcqueue.cli.output import emit, output_option


@click.group()
@server_dir_option
def journal():
    """Inspect and maintain a server journal."""


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
def export(path):
    """Print every event of a journal as one JSON line (NDJSON, whatever --output says)."""
    from hpcqueue.journal.tools import export as do_export

    do_export(path, sys.stdout)


@journal.command()
@server_dir_option
@click.pass_context
def stream(ctx):
    """Print the running server's events as they happen, one JSON line each (NDJSON,
    whatever --output says); until interrupted."""
    import json

    from hpcqueue.access import connect
    from hpcqueue.cli.common import check_reply, get_server_dir

    conn = connect(get_server_dir(ctx))
    try:
        conn.send({"op": "stream"})
        check_reply(conn.recv())
        conn.settimeout(None)
        click.echo(f"streaming the events of the server in {get_server_dir(ctx)} "
                   "(Ctrl-C stops)", err=True)
        while True:
            msg = conn.recv()
            if not isinstance(msg, dict) or "event" not in msg:
                check_reply(msg)
                continue
            sys.stdout.write(json.dumps(msg["event"], default=repr, separators=(",", ":")))
            sys.stdout.write("\n")
            sys.stdout.flush()
    finally:
        conn.close()


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
@output_option
def check(path, output):
    """Tell what is intact in a journal and where damage begins (exit 1 if damaged)."""
    from hpcqueue.journal.tools import check as do_check

    report = do_check(path)
    emit(output, {"path": path, "ok": report.ok, "version": report.version,
                  "bytes": report.size, "frames": report.frames, "events": report.events,
                  "damaged": [list(r) for r in report.middle_damage],
                  "torn_tail": report.torn_tail, "replay_error": report.replay_error,
                  "lines": report.lines()},
         table=lambda: click.echo("\n".join(report.lines())))
    if not report.ok:
        raise SystemExit(1)


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
@output_option
def repair(path, output):
    """Write a journal of every intact record of a damaged one (the server must be stopped).

    The original is kept beside it as PATH.damaged."""
    from hpcqueue.journal.tools import repair as do_repair

    backup, report, dropped = do_repair(path)
    lost = sum(end - start for start, end in report.damaged)
    if output != "table":
        return emit(output, {"path": path, "backup": backup, "events": report.events,
                             "kept": report.events - dropped, "dropped": dropped,
                             "lost_bytes": lost, "damaged": [list(r) for r in report.damaged]},
                    ids=[backup])
    click.echo(f"{path}: kept {report.events - dropped:,} of {report.events:,} intact events "
               f"({report.frames:,} frames); lost {lost:,} damaged byte(s) in "
               f"{len(report.damaged)} stretch(es)"
               + (f" and {dropped:,} event(s) that depended on what was lost" if dropped
                  else ""))
    for start, end in report.damaged:
        click.echo(f"  lost bytes {start:,}-{end - 1:,}")
    click.echo(f"the original is kept as {backup}")


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
@output_option
def upgrade(path, output):
    """Rewrite a journal of an older hpcqueue in the current format (keeps a backup)."""
    from hpcqueue.journal.tools import upgrade as do_upgrade

    backup, events = do_upgrade(path)
    if output != "table":
        return emit(output, {"path": path, "backup": backup, "events": events}, ids=[backup])
    click.echo(f"{path}: upgraded {events:,} events to format version 2; the original is "
               f"kept as {backup}")


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False), required=False)
@server_dir_option
@output_option
@click.pass_context
def compact(ctx, path, output):
    """Rewrite the journal as a snapshot of the state: smaller, and faster to restart on.

    With no PATH, the running server compacts its own journal (it also does so by itself
    as the journal grows); with PATH, the journal of a stopped server."""
    if path is None:
        reply = request(ctx, "journal_compact", timeout=600)
        path, before, after = reply["journal"], reply["before"], reply["after"]
    else:
        from hpcqueue.journal.tools import compact as do_compact

        before, after = do_compact(path)
    emit(output, {"journal": str(path), "before": before, "after": after},
         table=lambda: click.echo(f"journal {path} compacted: {before:,} -> {after:,} bytes"))


@journal.command()
@click.argument("path", type=click.Path(dir_okay=False))
@output_option
def prune(path, output):
    """Drop the events of finished jobs (the server must be stopped)."""
    from hpcqueue.journal.tools import prune as do_prune

    jobs, before, after = do_prune(path)
    emit(output, {"path": path, "jobs": jobs, "before": before, "after": after},
         table=lambda: click.echo(f"dropped {jobs} finished job(s): {before} events -> "
                                  f"{after}"))


@journal.command()
@server_dir_option
@output_option
@click.pass_context
def flush(ctx, output):
    """Make the running server write and fsync its journal now."""
    path = request(ctx, "journal_flush")["journal"]
    emit(output, {"journal": path, "flushed": True},
         table=lambda: click.echo(f"journal {path} flushed"))
