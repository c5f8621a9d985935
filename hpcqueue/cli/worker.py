"""`hpcqueue worker start|list|info|stop`."""

from __future__ import annotations

import click

from hpcqueue.cli.common import (
    DURATION, ServiceCommand, get_server_dir, log_format_option, request, server_dir_option,
    verbose_option,
)
from hpcqueue.cli.completion import worker_ids
from hpcqueue.cli.output import (
    emit, output_option, print_fields, print_table, when, when_short, with_times,
)
from hpcqueue.cli.envconfig import from_env
from hpcqueue.cluster import default_cpus
from hpcqueue.model import format_duration


@click.group()
@server_dir_option
def worker():
    """Start, list and stop workers."""


def _tunnel(ctx, param, value):
    """Check --tunnel [USER@]HOST[:PORT] where it is given (also for deploy-ssh)."""
    if value is not None:
        from hpcqueue.exceptions import UsageError
        from hpcqueue.worker.tunnel import parse_tunnel

        try:
            parse_tunnel(value)
        except UsageError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    return value


TUNNEL_HELP = ("Reach the server through an SSH tunnel via HOST, which reaches it at the "
               "access record's host (or --server-host). Uses ~/.ssh/config, the agent and "
               "known_hosts; needs hpcqueue[ssh].")


@from_env
@worker.command(cls=ServiceCommand)
@server_dir_option
@click.option("--cpus", type=click.IntRange(min=1),
              help="CPUs this worker offers (default: the CPUs this process may use; inside "
                   "a task, $HPCQUEUE_CPUS is that task's CPUs).")
@click.option("--resource", "resources", multiple=True, metavar="NAME=N|NAME=[I,...]",
              help="Another resource this worker offers: a count (licenses=4) or indices "
                   "(gpus=[0,1]), each task getting its own (repeatable). Without gpus, "
                   "the worker offers the GPUs it detects (CUDA_VISIBLE_DEVICES, "
                   "ROCR_VISIBLE_DEVICES or nvidia-smi -L); gpus=N takes the first N "
                   "of them.")
@click.option("--idle-timeout", type=DURATION, help="Stop after being idle this long.")
@click.option("--time-limit", type=DURATION, help="Stop after running this long.")
@click.option("--on-server-lost", type=click.Choice(["stop", "reconnect"]), default="stop",
              show_default=True, help="What to do when the server goes away.")
@click.option("--manager", type=click.Choice(["auto", "none"]), default="auto",
              show_default=True,
              help="Read the Slurm/PBS job id and end time from the environment.")
@click.option("--server-host", help="Reach the server at this host or address instead of "
                                     "the one in its access record (another network).")
@click.option("--tunnel", metavar="[USER@]HOST[:PORT]", callback=_tunnel, help=TUNNEL_HELP)
@click.option("--executor", type=click.Choice(["process", "noop"]), default="process",
              hidden=True, help="noop: finish tasks without running them (benchmarks).")
@log_format_option
@verbose_option
@click.pass_context
def start(ctx, cpus, resources, idle_timeout, time_limit, on_server_lost, manager,
          server_host, tunnel, executor, log_format, verbose):
    """Run a worker in the foreground: by hand, or inside any batch job."""
    import asyncio

    from hpcqueue.cli import logs
    from hpcqueue.worker import resources as devices
    from hpcqueue.worker.agent import Worker, WorkerConfig

    logs.setup(verbose, log_format)
    res, indices = devices.parse_worker_resources(resources)
    vendor, res, indices = devices.worker_gpus(res, indices)
    cfg = WorkerConfig(
        server_dir=get_server_dir(ctx), cpus=cpus or default_cpus(), res=res,
        indices=indices, gpu_vendor=vendor, idle_timeout=idle_timeout, time_limit=time_limit,
        on_server_lost=on_server_lost, executor=executor, handle_signals=True,
        server_host=server_host, tunnel=tunnel,
    )
    if manager == "auto":
        from hpcqueue.worker import batch

        kind, job_id = batch.batch_job()
        if job_id:
            cfg.batch_job = f"{kind}:{job_id}"
        cfg.end_time = batch.end_time()
    return asyncio.run(Worker(cfg).run())


@worker.command("deploy-ssh", context_settings={"ignore_unknown_options": True})
@server_dir_option
@click.argument("hostfile")
@click.option("--python", "python", help="Python on the hosts that has hpcqueue (default: "
                                         "this one's path, as on a shared file system).")
@click.option("--tunnel", metavar="[USER@]HOST[:PORT]", callback=_tunnel,
              help="Each worker reaches the server through an SSH tunnel via HOST, opened on "
                   "its own host (with that host's ~/.ssh) by `worker start --tunnel`.")
@click.argument("worker_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def deploy_ssh(ctx, hostfile, python, tunnel, worker_args):
    """Start a worker on each host of HOSTFILE over SSH (one HOST or HOST:PORT a line).

    Options after HOSTFILE are `worker start` options, e.g. `--cpus 8 --idle-timeout 5m`.
    Uses your ~/.ssh/config, agent and known_hosts. Returns when the workers stop.
    """
    import sys

    from hpcqueue.worker.deploy import deploy, read_hostfile

    start.make_context("worker deploy-ssh", list(worker_args))  # bad options fail here
    hosts = read_hostfile(hostfile)
    command = [python or sys.executable, "-m", "hpcqueue", "worker", "start",
               "--server-dir", str(get_server_dir(ctx)), *worker_args]
    if tunnel:
        command += ["--tunnel", tunnel]
    failed = deploy(hosts, command)
    return 1 if failed else 0


@worker.command("list")
@server_dir_option
@click.option("--all", "show_all", is_flag=True, help="Include stopped and lost workers.")
@output_option
@click.pass_context
def list_(ctx, show_all, output):
    """Connected workers (and, with --all, those that left)."""
    rows = request(ctx, "workers", all=show_all)["workers"]
    if output != "table":
        return emit(output, [with_times(w, *WORKER_TIMES) for w in rows],
                    ids=[w["id"] for w in rows])
    print_table(
        ["ID", "STATE", "HOST", "CPUS", "RUNNING", "FINISHED", "BATCH JOB", "CONNECTED"],
        [[w["id"], w["state"], w["hostname"], w["cpus"], w["running"], w["finished"],
          _batch(w), when_short(w["connected"])] for w in rows],
    )


WORKER_TIMES = ("connected", "ended", "deadline")


def _batch(w: dict) -> str | None:
    """The batch job a worker runs in, or the allocation that started it (the local
    scheduler's allocations are no batch jobs)."""
    return w["batch_job"] or (f"alloc {w['alloc']}" if w.get("alloc") else None)


@worker.command()
@server_dir_option
@click.argument("worker_id", type=int, shell_complete=worker_ids)
@output_option
@click.pass_context
def info(ctx, worker_id, output):
    """One worker in detail."""
    import time

    from hpcqueue.worker.resources import format_resource

    w = request(ctx, "worker_info", worker=worker_id)
    w.pop("ok", None)
    if output != "table":
        return emit(output, with_times(w, *WORKER_TIMES), ids=[w["id"]])
    left = w["deadline"] - time.time() if w.get("deadline") else None
    print_fields([
        ("id", w["id"]), ("state", w["state"]), ("host", w["hostname"]), ("pid", w["pid"]),
        ("cpus", w["cpus"]),
        ("resources", ", ".join(f"{k}={format_resource(v)}"
                                for k, v in w["resources"].items()) or None),
        ("batch job", w["batch_job"]), ("allocation", w.get("alloc")),
        ("connected", when(w["connected"])),
        ("ended", when(w["ended"])), ("reason", w["reason"]),
        ("time left", format_duration(left) if left is not None else None),
        ("running tasks", w["running"]), ("finished tasks", w["finished"]),
    ])


@worker.command()
@server_dir_option
@click.argument("workers", nargs=-1, required=True, shell_complete=worker_ids)
@output_option
@click.pass_context
def stop(ctx, workers, output):
    """Stop workers: IDs or `all`. Their running tasks go back to waiting."""
    if "all" in workers:
        ref = "all"
    else:
        try:
            ref = [int(w) for w in workers]
        except ValueError:
            raise click.BadParameter("give worker ids or `all`", param_hint="WORKERS") from None
    ids = request(ctx, "worker_stop", workers=ref)["stopping"]
    if output != "table":
        return emit(output, {"stopping": ids}, ids=ids)
    click.echo(f"stopping {len(ids)} worker(s): {' '.join(map(str, ids)) or '-'}")
