"""`job wait`, `job progress` and `submit --wait`: waiting for jobs through
:meth:`hpcqueue.Client.watch`, the progress view of :mod:`hpcqueue.progress` on stderr, and
the final lines and exit code."""

from __future__ import annotations

import click

from hpcqueue.cli.common import get_server_dir


def wait(ctx: click.Context, jobs, progress: bool, unfinished: bool = False) -> list[dict]:
    """Block until the jobs end (:meth:`hpcqueue.Client.wait`, with its progress view on
    stderr); returns their final summaries, as the server sends them.  UNFINISHED: `all`
    means the jobs unfinished now (`job wait`), not every job the server holds (`job
    progress`)."""
    from hpcqueue.client import Client

    with Client(get_server_dir(ctx)) as client:
        final = client.wait(jobs, progress=progress, unfinished=unfinished)
    return [final_row(j) for j in final]


def final_row(summary) -> dict:
    """A final summary as `job wait --output json` prints it (no `assigned`: that is for
    progress only)."""
    row = summary.as_dict()
    row.pop("assigned", None)
    return row


def report(jobs: list[dict], output: str = "table") -> int:
    """Print one line per job (in OUTPUT: json gives the list of the jobs' summaries, quiet
    nothing); the exit code of `job wait` and `submit --wait`: 0 only if every task of the
    jobs waited for finished, 1 if any failed, was canceled or did not end (the jobs waited
    for are those unfinished when the wait began, for `all`)."""
    bad = sum(j["finished"] != j["tasks"] for j in jobs)
    if output != "table":
        from hpcqueue.cli.output import emit, with_times

        emit(output, [with_times(j, "submitted", "ended") for j in jobs])
        return 1 if bad else 0
    if not jobs:
        click.echo("no unfinished job to wait for")
        return 0
    for j in jobs:
        parts = [f"{j['finished']} finished"]
        if j["failed"]:
            parts.append(f"{j['failed']} failed")
        if j["canceled"]:
            parts.append(f"{j['canceled']} canceled")
        click.echo(f"job {j['id']} {j['state']}: {j['tasks']} tasks, {', '.join(parts)}")
    return 1 if bad else 0
