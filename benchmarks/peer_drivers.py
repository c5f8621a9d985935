"""Run the workload through one peer, inside a child process of benchmarks/peers.py.

    python benchmarks/peer_drivers.py hyperqueue --tasks N --workers W --cpus C --dir D --out F

Each peer runs through its own Python package, in this one process:

- HyperQueue (`hyperqueue` on PyPI): its wheel ships no `hq` binary, but its extension
  module holds the server and the worker. `LocalCluster` starts both here, as threads of
  this process; the client is this process too.
- hypershell (`hypershell` on PyPI): `hypershell.cluster.run_local` runs its server and one
  client (with `--cpus` executor threads) as threads of this process, with no database
  (`in_memory`), bundles of 100 and no confirmations, as its docs suggest for throughput.

The clock runs from the submission to the moment the peer reports every task done. Own CPU
is this process's utime+stime over the same span (all its threads: server, workers and the
in-process client; the task processes are its children and are not counted). The figures
go to `--out` as JSON; progress and log lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import cpu_seconds

TASK = "/bin/true"
HYPERSHELL_BUNDLE = 100  # tasks per bundle, both ways
HYPERSHELL_BUNDLE_WAIT = 0.1  # seconds before a partial bundle is flushed


def run_hyperqueue(tasks: int, workers: int, cpus: int, d: Path) -> dict:
    from hyperqueue import Job, LocalCluster
    from hyperqueue.cluster import WorkerConfig

    with LocalCluster(server_dir=str(d / "hq-server")) as cluster:
        for _ in range(workers):
            cluster.start_worker(WorkerConfig(cores=cpus))
        client = cluster.client()
        # a small job first, untimed: the workers are up and the paths warm
        warm = Job()
        for _ in range(workers * cpus):
            warm.program([TASK], stdout=None, stderr=None)
        client.wait_for_jobs([client.submit(warm)])

        job = Job()
        for _ in range(tasks):
            job.program([TASK], stdout=None, stderr=None)  # no output files, as --stdout none
        cpu0 = cpu_seconds(os.getpid())[0]
        t0 = time.perf_counter()
        submitted = client.submit(job)
        ok = client.wait_for_jobs([submitted], raise_on_error=False)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(os.getpid())[0] - cpu0
    if not ok:
        raise SystemExit(f"hyperqueue: some of the {tasks} tasks failed")
    return {"tasks": tasks, "wall": wall, "cpu": cpu}


def run_hypershell(tasks: int, workers: int, cpus: int, d: Path) -> dict:
    from hypershell.cluster import run_local

    if workers != 1:
        raise SystemExit("hypershell: its local cluster has one client")
    failures = d / "hypershell-failed.txt"
    with open(failures, "w") as failed, open(os.devnull, "w") as out:
        cpu0 = cpu_seconds(os.getpid())[0]
        t0 = time.perf_counter()
        run_local([TASK] * tasks, num_threads=cpus, port=free_port(), in_memory=True,
                  no_confirm=True, bundlesize=HYPERSHELL_BUNDLE,
                  bundlewait=HYPERSHELL_BUNDLE_WAIT, redirect_failures=failed,
                  redirect_output=out, redirect_errors=out)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(os.getpid())[0] - cpu0
    if failures.read_text().strip():
        raise SystemExit(f"hypershell: some of the {tasks} tasks failed (see {failures})")
    return {"tasks": tasks, "wall": wall, "cpu": cpu}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (hypershell's default is fixed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DRIVERS = {"hyperqueue": run_hyperqueue, "hypershell": run_hypershell}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=sorted(DRIVERS))
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--dir", type=Path, required=True, help="a fresh directory to work in")
    ap.add_argument("--out", type=Path, required=True, help="where the figures go (JSON)")
    args = ap.parse_args(argv)
    os.chdir(args.dir)
    result = DRIVERS[args.peer](args.tasks, args.workers, args.cpus, args.dir)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
