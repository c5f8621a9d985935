"""`hpcqueue run`: a server and local workers in one process, for one job.

No cluster and no server dir to manage: a :class:`hpcqueue.LocalCluster` (the server on
loopback with a fresh key in a private temporary dir, the workers in the same event loop)
runs the job, and everything is gone when it ends.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time

import click

from hpcqueue.cli.jobspec import task_options
from hpcqueue.cli.output import emit, output_option
from hpcqueue.exceptions import ServerUnreachable


@click.command(context_settings={"allow_interspersed_args": False},
               short_help="Run one job here and now: a server and workers in this process.")
@task_options
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local workers to start.")
@click.option("--worker-cpus", type=click.IntRange(min=1),
              help="CPUs per worker (default: the CPUs this process may use, split "
                   "between the workers).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("--executor", type=click.Choice(["process", "noop"]), default="process",
              hidden=True)
@output_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(command, workers, worker_cpus, progress, executor, output, **opts):
    """Run one job here and now, with no server to start and no cluster: a server and
    local workers live in this process until the job ends.

    \b
      hpcqueue run --each-line commands.txt          # each line is a shell command
      hpcqueue run --array 1-8 -- ./sim.sh           # HPCQUEUE_TASK_ID = 1..8

    Task output goes to this terminal (this process's stdout and stderr) unless
    --stdout/--stderr say otherwise.  A summary goes to stderr (--output json: an
    object on stdout).  Exit code 1 if any task failed.
    """
    from hpcqueue.cluster import LocalCluster
    from hpcqueue.exceptions import UsageError
    from hpcqueue.jobspec import build_spec

    if not command and not opts.get("each_line"):
        raise UsageError("no command: give it after `--`, e.g. `hpcqueue run -- ./sim.sh`, "
                         "or give --each-line FILE of shell commands")
    spec = build_spec(opts, command, default_output="inherit")
    if progress is None:
        progress = sys.stderr.isatty()
    with _signals_interrupt(), LocalCluster(workers, worker_cpus, executor=executor) as local:
        t0 = time.monotonic()
        job = local.client()._submit_spec(spec)
        try:
            summary = job.wait(progress=progress)
        except ServerUnreachable:
            if local.failure is not None:  # the workers ended, so the server stopped
                raise local.failure from None
            raise
        elapsed = time.monotonic() - t0
        failed = list(job.tasks(state="failed", limit=10)) if summary.failed else []
    summary = {"tasks": summary.tasks, "finished": summary.finished, "failed": summary.failed,
               "submitted": summary.submitted, "ended": summary.ended}
    rate = summary["tasks"] / elapsed if elapsed > 0 else 0.0
    if output != "table":
        from hpcqueue.cli.output import with_times

        rows = [{"id": t.id, "entry": t.entry, "exit_code": t.exit_code, "error": t.error}
                for t in failed]
        emit(output, dict(with_times(summary, "submitted", "ended"), elapsed=elapsed,
                          failed_tasks=rows))
        return 1 if summary["failed"] else 0
    parts = [f"{summary['finished']} finished"]
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    click.echo(f"hpcqueue run: {summary['tasks']} tasks, {', '.join(parts)} in "
               f"{elapsed:.2f}s ({rate:.0f} tasks/s)", err=True)
    for task in failed[:10]:
        what = task.entry if task.entry is not None else f"task {task.id}"
        click.echo(f"  failed: {what}: {task.error or 'exit code ' + str(task.exit_code)}",
                   err=True)
    if summary["failed"] > 10:
        click.echo(f"  ... and {summary['failed'] - 10} more", err=True)
    return 1 if summary["failed"] else 0


# --stdout and --stderr are shared with `submit`, whose tasks write files; here they go to
# this terminal unless told otherwise
for _param in run.params:
    if _param.name in ("stdout", "stderr"):
        _param.help = (f"Where each task's {_param.name} goes (default: this process's "
                       f"{_param.name}; a path pattern such as job-%{{JOB_ID}}/%{{TASK_ID}}."
                       f"{_param.name} writes a file per task; `none` discards it).")


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP interrupt `run` as Ctrl-C does, so that its local cluster stops
    (killing the tasks) and its server dir is removed."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
