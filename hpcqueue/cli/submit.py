"""`hpcqueue submit`."""

from __future__ import annotations

import click

from hpcqueue.cli.common import request, server_dir_option
from hpcqueue.cli.jobspec import build_spec, task_options


@click.command(context_settings={"allow_interspersed_args": False})
@server_dir_option
@task_options
@click.option("--wait", is_flag=True, help="Wait until the job ends.")
@click.option("--progress", is_flag=True, help="Wait, showing a progress bar.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx, command, wait, progress, **opts):
    """Submit a job: CMD ARGS... run once per task (put them after `--`).

    \b
      hpcqueue submit --array 1-1000 -- ./sim.sh      # HPCQUEUE_TASK_ID = 1..1000
      hpcqueue submit --each-line params.txt -- ./sim.sh   # HPCQUEUE_ENTRY = a line
      hpcqueue submit --each-line commands.txt        # each line is a shell command
    """
    spec = build_spec(opts, command)
    reply = request(ctx, "submit", timeout=300, spec=spec)
    job_id = reply["job"]
    if reply.get("existing"):
        click.echo(f"job {job_id} already holds unique key {spec['unique']!r} and is "
                   f"unfinished: not submitted again ({reply['tasks']} task(s))")
    else:
        click.echo(f"job {job_id} submitted: {reply['tasks']} task(s)")
    if wait or progress:
        from hpcqueue.cli import waiting

        return waiting.report(waiting.wait(ctx, job_id, progress))
    return 0
