"""`hpcqueue run`: a server and local workers in one process, for one job.

No cluster and no server dir to manage: the server listens on loopback with a
fresh key in a private temporary dir, the workers run in the same event loop,
and everything is gone when the job ends.
"""

from __future__ import annotations

import sys

import click

from hpcqueue.cli.jobspec import build_spec, task_options
from hpcqueue.cli.output import emit, output_option


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
    import asyncio

    from hpcqueue.cli.worker import default_cpus
    from hpcqueue.exceptions import UsageError

    if not command and not opts.get("each_line"):
        raise UsageError("no command: give it after `--`, e.g. `hpcqueue run -- ./sim.sh`, "
                         "or give --each-line FILE of shell commands")
    spec = build_spec(opts, command, default_output="inherit")
    if worker_cpus is None:
        worker_cpus = max(1, default_cpus() // workers)
    if progress is None:
        progress = sys.stderr.isatty()
    summary, elapsed, failed = asyncio.run(
        _run(spec, workers, worker_cpus, progress, executor))
    rate = summary["tasks"] / elapsed if elapsed > 0 else 0.0
    if output != "table":
        from hpcqueue.cli.output import with_times

        emit(output, dict(with_times(summary, "submitted", "ended"), elapsed=elapsed,
                          failed_tasks=failed))
        return 1 if summary["failed"] else 0
    parts = [f"{summary['finished']} finished"]
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    click.echo(f"hpcqueue run: {summary['tasks']} tasks, {', '.join(parts)} in "
               f"{elapsed:.2f}s ({rate:.0f} tasks/s)", err=True)
    for row in failed[:10]:
        what = row.get("entry") if row.get("entry") is not None else f"task {row['id']}"
        click.echo(f"  failed: {what}: {row.get('error') or 'exit code ' + str(row['exit_code'])}",
                   err=True)
    if len(failed) > 10:
        click.echo(f"  ... and {len(failed) - 10} more", err=True)
    return 1 if summary["failed"] else 0


# --stdout and --stderr are shared with `submit`, whose tasks write files; here they go to
# this terminal unless told otherwise
for _param in run.params:
    if _param.name in ("stdout", "stderr"):
        _param.help = (f"Where each task's {_param.name} goes (default: this process's "
                       f"{_param.name}; a path pattern such as job-%{{JOB_ID}}/%{{TASK_ID}}."
                       f"{_param.name} writes a file per task; `none` discards it).")


async def _run(spec: dict, n_workers: int, cpus: int, progress: bool, executor: str):
    import asyncio
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from hpcqueue.exceptions import HpcqueueError
    from hpcqueue.model import FAILED
    from hpcqueue.server.config import ServerConfig
    from hpcqueue.server.lifecycle import Server
    from hpcqueue.worker.agent import Worker, WorkerConfig

    tmp = Path(tempfile.mkdtemp(prefix="hpcqueue-run-"))
    server = Server(ServerConfig(server_dir=tmp, host="127.0.0.1", port=0))
    try:
        await server.startup()
        server.install_signal_handlers()
        main = asyncio.ensure_future(server.main_loop())
        t0 = time.monotonic()
        job = server.core.submit(spec)
        waiter = server.core.add_waiter({job.id})
        workers = [
            asyncio.ensure_future(Worker(WorkerConfig(
                server_dir=tmp, cpus=cpus, executor=executor)).run())
            for _ in range(n_workers)
        ]
        bar = None
        if progress:
            from hpcqueue.cli.waiting import ProgressBar

            bar = ProgressBar().__enter__()
        try:
            while not waiter.event.is_set() and not server.stopping.is_set():
                try:
                    await asyncio.wait_for(asyncio.shield(waiter.event.wait()), 0.2)
                except asyncio.TimeoutError:
                    pass
                if bar is not None:
                    bar.update([job.summary()])
                if all(w.done() for w in workers) and not waiter.event.is_set():
                    errors = [w.exception() for w in workers if w.exception() is not None]
                    raise HpcqueueError("the local workers ended before the job: "
                                        + (str(errors[0]) if errors else "no error given"))
        finally:
            if bar is not None:
                bar.update([job.summary()])
                bar.__exit__(None, None, None)
        elapsed = time.monotonic() - t0
        failed = [job.task_row(i) for i in job.indexes_in(FAILED)]
        summary = job.summary()
        if not waiter.event.is_set():
            raise click.Abort()
        server.stopping.set()
        await main
        await server.shutdown()
        await asyncio.wait(workers, timeout=5)
        return summary, elapsed, failed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
