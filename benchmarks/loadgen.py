"""Load generator: one process, N simulated workers and M clients against one real server.

    python3 benchmarks/loadgen.py                        # 1,000 workers, then 10,000
    python3 benchmarks/loadgen.py --workers 1000 --repeat 3 --tasks 500000

A real server (`hpcqueue server start --host 127.0.0.1`) runs as a subprocess in a fresh
server dir.  This process opens N worker connections in one asyncio loop, each speaking the
real protocol with hpcqueue's own code (`protocol.client_handshake`, `Session.seal`,
`read_message`): the worker hello, heartbeats, and for every `tasks` message a `done` with
exit code 0 for each task (a no-op executor; results wait RESULT_DELAY to travel together,
as a real worker's do).  A result says its task ran `--task-time` seconds (default 10 ms):
the server's prefetch follows it, so each worker holds about 1 + 0.1 s / task-time tasks per
cpu (11 by default; 65 with --task-time 0), and a run's tasks must be many times N times
that for the rate to be the steady state's.  Meanwhile M clients in a child process (so
that their latency is the server's, not this loop's) ask `job list` through
`hpcqueue.Client` in a loop.

Printed per run, with `uptime`'s load average:
- RSS per connected worker: the server's VmRSS after N workers connected and before any
  task, minus VmRSS before the first connection, over N; and VmHWM after the run;
- dispatch rate: tasks/s between 10 % and 90 % of the job's tasks reported (this process's
  clock), and over the whole job (the server's clock: job submitted -> ended);
- the server's and this process's CPU per task over the run;
- `job list` latency (median, p99, max) of the M clients while the tasks ran.

File descriptors: the server and this process each hold one per worker.  This script raises
its own soft RLIMIT_NOFILE to the hard limit, and the server, its child, inherits it (a
server started by hand raises its soft limit to the hard one itself; `ulimit -Hn` is the
ceiling: raise it in /etc/security/limits.conf, or `ulimit -n` as root, for more).

Figures only: a missed target never changes the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (
    Processes, cpu_seconds, memory_kib, start_server, stop_cluster,
)

from hpcqueue.access import read_access
from hpcqueue.protocol import client_handshake, read_message
from hpcqueue.worker.agent import RESULT_DELAY

TARGET_RATE = 100_000  # tasks/s with 10,000 workers
TARGET_KB = 20  # server RSS per connected worker
TARGET_P99 = 0.050  # seconds, `job list` while the tasks run
CONNECT_CONCURRENCY = 64  # connections in their handshake at once (the listen backlog is 100)
HEARTBEAT_TICK = 0.1  # seconds between two slices of heartbeats


def uptime() -> str:
    """The load averages, as `uptime` prints them."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() \
        .split("load average:")[-1].strip()


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now.  Exits with a
    clear line if even the hard limit is below NEEDED."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"loadgen: {needed} file descriptors are needed but the hard limit is {hard}: "
                 "run with fewer --workers, or raise the hard limit (`ulimit -Hn`, "
                 "/etc/security/limits.conf)")
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- simulated workers


class SimWorker:
    """One simulated worker: a connection, its session, and the results it holds."""

    __slots__ = ("reader", "writer", "session", "id", "pending", "flush_at", "fleet")

    def __init__(self, reader, writer, session, fleet: Fleet):
        self.reader, self.writer, self.session = reader, writer, session
        self.id = None
        self.pending: list = []
        self.flush_at = None
        self.fleet = fleet

    def send(self, message) -> None:
        self.writer.write(self.session.seal(message))

    async def serve(self) -> None:
        fleet = self.fleet
        loop = asyncio.get_running_loop()
        while True:
            msg = await read_message(self.reader, self.session)
            op = msg.get("op")
            if op == "tasks":
                t1 = time.time()
                t0 = t1 - fleet.task_time
                # a task is (job, index, id, instance, entry); a result row is
                # [job, index, instance, exit, t0, t1, msg]
                self.pending += [[task[0], task[1], task[3], 0, t0, t1, None]
                                 for task in msg["tasks"]]
                fleet.received += len(msg["tasks"])
                if self.flush_at is None:
                    self.flush_at = loop.call_later(RESULT_DELAY, self.flush)
            elif op == "stop":
                return

    def flush(self) -> None:
        self.flush_at = None
        rows, self.pending = self.pending, []
        if rows:
            self.send({"op": "done", "r": rows})
            self.fleet.reported(len(rows))


class Fleet:
    """N simulated workers in this loop, their heartbeats, and the count of tasks done."""

    def __init__(self, server_dir: Path, cpus: int, task_time: float):
        self.server_dir, self.cpus, self.task_time = server_dir, cpus, task_time
        self.workers: list[SimWorker] = []
        self.tasks: list[asyncio.Task] = []
        self.received = 0
        self.done = 0
        self.marks: dict[float, float] = {}  # share of the goal -> when it was passed
        self.goal = 0
        self.heartbeat = 8.0

    def reported(self, n: int) -> None:
        self.done += n
        for share in (0.1, 0.9):
            if share not in self.marks and self.done >= share * self.goal > 0:
                self.marks[share] = time.perf_counter()

    async def connect(self, n: int) -> None:
        record = read_access(self.server_dir)
        key = record.key_bytes
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        info = {"hostname": socket.gethostname(), "cpus": self.cpus, "res": {},
                "version": "loadgen"}

        async def one(k: int) -> None:
            async with gate:
                reader, writer = await asyncio.open_connection(record.host, record.port,
                                                               limit=1 << 20)
                writer.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                session = await client_handshake(reader, writer, key)
                w = SimWorker(reader, writer, session, self)
                w.send({"op": "worker_hello", "info": {**info, "pid": k}})
                welcome = await read_message(reader, session)
                w.id = welcome["id"]
                self.heartbeat = float(welcome.get("heartbeat") or 8.0)
                self.workers.append(w)
                self.tasks.append(asyncio.ensure_future(w.serve()))

        await asyncio.gather(*(one(k) for k in range(n)))

    async def heartbeats(self) -> None:
        """Every worker sends `hb` once per heartbeat interval, spread evenly over it."""
        k = 0
        while True:
            await asyncio.sleep(HEARTBEAT_TICK)
            workers = self.workers
            share = max(1, round(len(workers) * HEARTBEAT_TICK / self.heartbeat))
            for _ in range(min(share, len(workers))):
                workers[k % len(workers)].send({"op": "hb"})
                k += 1

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in self.workers:
            w.writer.close()
        await asyncio.sleep(0)


# ---------------------------------------------------------------- clients (a child process)


def client_load(server_dir: str, clients: int, pause: float, stop, out) -> None:
    """M threads, each asking `job list` (Client.jobs()) until STOP is set; their
    latencies go to OUT."""
    from hpcqueue import Client

    lat: list[float] = []
    errors: list[str] = []

    def one() -> None:
        with Client(server_dir, timeout=60) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    c.jobs()
                except Exception as e:  # report it, do not hide it
                    errors.append(f"{type(e).__name__}: {e}")
                    return
                lat.append(time.perf_counter() - t0)
                time.sleep(pause)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((lat, errors))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# ---------------------------------------------------------------- one run


def run_once(procs: Processes, root: Path, args, n: int) -> dict:
    c, _ = start_server(procs, root, extra=["--heartbeat", args.heartbeat])
    try:
        return asyncio.run(_drive(c, args, n))
    finally:
        stop_cluster(procs, c)


async def _drive(c, args, n: int) -> dict:
    from hpcqueue import Client

    pid = c.server.pid
    load = uptime()
    rss0 = memory_kib(pid)
    fleet = Fleet(c.server_dir, args.cpus, args.task_time)
    t0 = time.perf_counter()
    await fleet.connect(n)
    connect_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)  # let the server settle (the hellos' dispatch rounds)
    rss1 = memory_kib(pid)
    beats = asyncio.ensure_future(fleet.heartbeats())

    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    clients = ctx.Process(target=client_load,
                          args=(str(c.server_dir), args.clients, args.pause, stop, out))
    clients.start()
    await asyncio.sleep(1.0)  # the child's imports

    fleet.goal = args.tasks
    spy = None
    if args.py_spy:  # the server's stacks while the tasks run, as collapsed stacks
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw",
                                "--rate", "200", "--nonblocking", "--output",
                                f"{args.py_spy}.{n}.{os.getpid()}.{time.time():.0f}.txt"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu_server0, cpu_self0 = cpu_seconds(pid)[0], sum(os.times()[:2])
    t_submit = time.perf_counter()
    with Client(c.server_dir) as client:  # in a thread: it blocks, and the loop must run
        job = await asyncio.to_thread(
            client.submit, ["true"], array=f"1-{args.tasks}", stdout="none", stderr="none")
        while fleet.done < args.tasks:
            await asyncio.sleep(0.05)
            if time.perf_counter() - t_submit > args.timeout:
                raise RuntimeError(f"{fleet.done} of {args.tasks} tasks done after "
                                   f"{args.timeout:g}s")
        info = await asyncio.to_thread(client.request, "job_info", job=job.id)
        while info["finished"] < args.tasks:  # the last results are still on their way
            await asyncio.sleep(0.05)
            info = await asyncio.to_thread(client.request, "job_info", job=job.id)
    wall = time.perf_counter() - t_submit
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await asyncio.to_thread(spy.wait, 30)
    cpu_server = cpu_seconds(pid)[0] - cpu_server0
    cpu_self = sum(os.times()[:2]) - cpu_self0
    stop.set()
    lat, errors = await asyncio.to_thread(out.get, True, 120)
    await asyncio.to_thread(clients.join, 30)
    beats.cancel()
    hwm = memory_kib(pid, "VmHWM")
    await fleet.close()
    window = fleet.marks[0.9] - fleet.marks[0.1]
    return {
        "load": load, "workers": n, "connect_s": connect_s,
        "kb_per_worker": (rss1 - rss0) / n, "rss0_mib": rss0 / 1024, "rss1_mib": rss1 / 1024,
        "hwm_mib": hwm / 1024,
        "rate": 0.8 * args.tasks / window,
        "server_rate": args.tasks / (info["ended"] - info["submitted"]),
        "wall": wall,
        "server_us": 1e6 * cpu_server / args.tasks, "self_us": 1e6 * cpu_self / args.tasks,
        "lat": lat, "errors": errors, "load_after": uptime(),
    }


# ---------------------------------------------------------------- main


def show(label: str, values: list[float], fmt: str, target: str | None = None) -> None:
    med = statistics.median(values)
    text = f"  {label:<40} {format(med, fmt):>12}"
    if len(values) > 1:
        text += f"   (runs {format(min(values), fmt)}..{format(max(values), fmt)})"
    if target:
        text += f"   [target {target}]"
    print(text, flush=True)


def report(n: int, runs: list[dict]) -> None:
    print(f"\n== {n:,} simulated workers, {len(runs)} run(s): median (range)")
    for k, r in enumerate(runs, 1):
        lat = r["lat"]
        print(f"  run {k}: load average {r['load']} before, {r['load_after']} after; "
              f"{len(lat)} `job list` requests" + (f"; client errors: {r['errors'][:2]}"
                                                    if r["errors"] else ""))
    show("connect N workers (s)", [r["connect_s"] for r in runs], ".1f")
    show("server RSS, no worker (MiB)", [r["rss0_mib"] for r in runs], ".1f")
    show("server RSS, N workers (MiB)", [r["rss1_mib"] for r in runs], ".1f")
    show("RSS per connected worker (KB)", [r["kb_per_worker"] * 1.024 for r in runs], ".1f",
         f"<= {TARGET_KB} KB")
    show("server VmHWM after the run (MiB)", [r["hwm_mib"] for r in runs], ".1f")
    show("dispatch rate, 10-90 % (tasks/s)", [r["rate"] for r in runs], ",.0f",
         f">= {TARGET_RATE:,}")
    show("dispatch rate, server clock (tasks/s)", [r["server_rate"] for r in runs], ",.0f")
    show("server CPU per task (us)", [r["server_us"] for r in runs], ".1f")
    show("loadgen CPU per task (us)", [r["self_us"] for r in runs], ".1f")
    ok = [r for r in runs if r["lat"]]
    if ok:
        show("`job list` median (ms)", [1000 * statistics.median(r["lat"]) for r in ok], ".1f")
        show("`job list` p99 (ms)", [1000 * percentile(r["lat"], 0.99) for r in ok], ".1f",
             f"< {1000 * TARGET_P99:.0f} ms")
        show("`job list` max (ms)", [1000 * max(r["lat"]) for r in ok], ".1f")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, action="append",
                    help="simulated workers (repeat for several sizes; default 1000 and "
                         "10000)")
    ap.add_argument("--cpus", type=int, default=1, help="cpus each worker says it has")
    ap.add_argument("--tasks", type=int, default=1_000_000, help="tasks of the job")
    ap.add_argument("--task-time", type=float, default=0.01,
                    help="seconds each task says it ran (results go back at once): the "
                         "server's prefetch, and so the tasks a worker holds, follow it")
    ap.add_argument("--clients", type=int, default=4, help="`job list` clients")
    ap.add_argument("--pause", type=float, default=0.02,
                    help="seconds a client waits between two requests")
    ap.add_argument("--heartbeat", default="8s", help="the server's --heartbeat")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take")
    ap.add_argument("--py-spy", metavar="PREFIX",
                    help="profile the server with py-spy (on PATH) while the tasks run: "
                         "collapsed stacks in PREFIX.<workers>.<pid>.<time>.txt")
    ap.add_argument("--tmpdir", help="where the server dirs go")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.workers or ()) or args.tasks < 1 or args.repeat < 1:
        ap.error("--workers, --tasks and --repeat must be at least 1")
    args.workers = args.workers or [1000, 10_000]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    limit = raise_fd_limit(max(args.workers) + 200)
    print(f"hpcqueue load generator {time.strftime('%Y-%m-%d %H:%M:%S')}: "
          f"{os.cpu_count()} CPUs, RLIMIT_NOFILE {limit} (the server inherits it), "
          f"{args.tasks:,} tasks a run, {args.clients} `job list` clients", flush=True)
    root = Path(tempfile.mkdtemp(prefix="hq-loadgen-", dir=args.tmpdir))
    try:
        with Processes() as procs:
            for n in args.workers:
                runs = []
                for k in range(args.repeat):
                    print(f"  {n:,} workers, run {k + 1}: load average {uptime()}", flush=True)
                    runs.append(run_once(procs, root, args, n))
                report(n, runs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
