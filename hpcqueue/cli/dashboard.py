"""`hpcqueue dashboard`: the live terminal view (hpcqueue.dashboard); textual is imported only
when it runs."""

from __future__ import annotations

import sys

import click

from hpcqueue.cli.common import DURATION, get_server_dir, server_dir_option
from hpcqueue.exceptions import UsageError


@click.command("dashboard")
@server_dir_option
@click.option("--interval", type=DURATION, default=0.25, show_default=True,
              help="Time between two updates at least: the server pushes what changed, "
                   "merged, at most this often.")
@click.pass_context
def dashboard(ctx, interval):
    """A live view of the server in the terminal: jobs with their progress, rate and ETA;
    the tasks of the selected job and the output of the selected task; workers; allocation
    queues and their latest decisions.

    Keys (shown at the bottom): c cancels the selected job, p and r pause and resume the
    selected queue, f filters the tasks by state, n shows more tasks, o switches the output
    between stdout and stderr, q quits; tab moves between the tables."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("hpcqueue dashboard needs a terminal (over SSH: `ssh -t`); in a "
                         "script, use `hpcqueue job list` or `hpcqueue job progress`")
    from hpcqueue.client import Client
    from hpcqueue.dashboard.link import REQUEST_TIMEOUT, ServerLink

    link = ServerLink(Client(get_server_dir(ctx), timeout=REQUEST_TIMEOUT))
    first = link.open_watch(interval)  # no server: a clear error, before the screen changes
    try:
        from hpcqueue.dashboard.app import Dashboard

        Dashboard(link, first).run()
    finally:
        link.close()
    return 0
