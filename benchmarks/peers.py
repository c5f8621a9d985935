"""hpcqueue against its peers and the `xargs -P2` floor, measured side by side in one run.

Run from the repository root (the peers come with `pip install 'hpcqueue[bench]'`):

    python3 benchmarks/peers.py                        # a few minutes on 2 cores
    python3 benchmarks/peers.py --tasks 200 --repeat 1 # a smoke run

The workload is N × `/bin/true`, one process per task, on 1 worker × 2 cpus and on 2
workers × 1 cpu where the peer offers that shape. Contenders:

- hpcqueue (journal on), with `--stdout none --stderr none` and with the default output
  path (two files per task), each through benchmarks/harness.py: a real server and real
  workers, driven by the real command line;
- HyperQueue and hypershell through their Python packages (benchmarks/peer_drivers.py,
  in a child process), when they are installed; otherwise their rows say so.

Each contender's run is followed at once by a floor run of the same size,
`seq N | xargs -P2 -n1 true`, and its **share of the floor's rate** is taken from that pair,
so that the machine's drift hits both alike. Everything repeats `--repeat` times,
interleaved (every contender once, then again). Printed: each run as it ends, with
`/proc/loadavg` at its start, then per contender the median and the range of its tasks/s,
share of the floor's rate and own CPU per task (server and worker processes, utime+stime
from /proc; the task processes not counted). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import NO_OUTPUT, Processes, Setup, log_tail, run_floor, run_tasks

DRIVERS = Path(__file__).resolve().with_name("peer_drivers.py")
NOT_INSTALLED = "not installed (pip install 'hpcqueue[bench]')"
PEER_TIMEOUT_MIN = 120.0  # seconds for a peer's run, at least ...
PEER_MIN_RATE = 20.0  # ... or this many tasks/s, whichever allows longer


@dataclass(frozen=True)
class Contender:
    system: str  # hpcqueue, hyperqueue, hypershell: also the Python package's name
    workers: int
    cpus: int  # per worker
    output: bool = False  # hpcqueue only: the default per-task files, not --stdout none

    @property
    def label(self) -> str:
        shape = f"{self.workers} worker{'s' if self.workers > 1 else ''} x {self.cpus} " \
                f"cpu{'s' if self.cpus > 1 else ''}"
        if self.system == "hypershell":  # one client with executor threads
            return f"hypershell, 1 client x {self.cpus} threads"
        if self.system != "hpcqueue":
            return f"{self.system}, {shape}"
        return f"hpcqueue, {shape}, {'default output' if self.output else '--stdout none'}"


CONTENDERS = [
    Contender("hpcqueue", 1, 2),
    Contender("hpcqueue", 1, 2, output=True),
    Contender("hpcqueue", 2, 1),
    Contender("hpcqueue", 2, 1, output=True),
    Contender("hyperqueue", 1, 2),
    Contender("hyperqueue", 2, 1),
    Contender("hypershell", 1, 2),  # its local cluster has one client: no 2 x 1 shape
]
SYSTEMS = ("hpcqueue", "hyperqueue", "hypershell")


@dataclass
class Pair:
    """One contender run and the floor run right after it."""

    tasks: int
    wall: float
    cpu: float  # own CPU seconds of the server and worker processes
    load: str  # /proc/loadavg's three averages at the run's start
    floor_wall: float
    floor_cpu: float  # xargs, seq and the task processes
    floor_load: str

    @property
    def rate(self) -> float:
        return self.tasks / self.wall

    @property
    def floor_rate(self) -> float:
        return self.tasks / self.floor_wall

    @property
    def share(self) -> float:
        return self.rate / self.floor_rate

    @property
    def ms_per_task(self) -> float:
        return 1000 * self.cpu / self.tasks


@dataclass
class Results:
    pairs: dict[Contender, list[Pair]] = field(default_factory=dict)
    failed: dict[Contender, str] = field(default_factory=dict)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def installed(system: str) -> bool:
    return system == "hpcqueue" or importlib.util.find_spec(system) is not None


def version(system: str) -> str:
    try:
        return importlib.metadata.version(system)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------- one run of a contender


def run_contender(procs: Processes, root: Path, c: Contender, n: int) -> tuple[float, float]:
    """(wall seconds, own CPU seconds) of n tasks through one contender."""
    d = Path(tempfile.mkdtemp(prefix=f"{c.system}-", dir=root))
    try:
        if c.system == "hpcqueue":
            run = run_tasks(procs, d, Setup(workers=(c.cpus,) * c.workers, journal=True), n,
                            () if c.output else NO_OUTPUT)
            return run.wall, run.server_cpu + run.worker_cpu
        return run_peer(procs, d, c, n)
    finally:
        shutil.rmtree(d, ignore_errors=True)  # the default output leaves 2 files a task


def run_peer(procs: Processes, d: Path, c: Contender, n: int) -> tuple[float, float]:
    out, log = d / "result.json", d / "driver.log"
    argv = [sys.executable, str(DRIVERS), c.system, "--tasks", str(n), "--workers",
            str(c.workers), "--cpus", str(c.cpus), "--dir", str(d), "--out", str(out)]
    proc = procs.spawn(argv, log, cwd=d)
    timeout = max(PEER_TIMEOUT_MIN, n / PEER_MIN_RATE)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no result within {timeout:g} s") from None
    finally:
        procs.stop(proc)
    if proc.returncode != 0 or not out.exists():
        last = log_tail(log, 1).strip() or "(no output)"
        raise RuntimeError(f"the driver exited {proc.returncode}: {last}")
    result = json.loads(out.read_text())
    return result["wall"], result["cpu"]


# ---------------------------------------------------------------- the interleaved runs


def measure(procs: Processes, root: Path, contenders: list[Contender], args) -> Results:
    res = Results()
    for rep in range(1, args.repeat + 1):
        print(f"\n-- repetition {rep} of {args.repeat}", flush=True)
        for c in contenders:
            if c in res.failed:
                continue
            n = args.tasks if c.system == "hpcqueue" else args.peer_tasks
            load = loadavg()
            try:
                wall, cpu = run_contender(procs, root, c, n)
            except (RuntimeError, OSError) as e:
                res.failed[c] = str(e).splitlines()[0]
                print(f"  {c.label:<44} failed: {res.failed[c]}", flush=True)
                continue
            floor_load = loadavg()
            floor = run_floor(n)
            p = Pair(n, wall, cpu, load, floor.wall, floor.cpu, floor_load)
            res.pairs.setdefault(c, []).append(p)
            print(f"  {c.label:<44} {n:>6,} tasks {p.rate:>7,.0f}/s  "
                  f"{p.ms_per_task:5.2f} ms CPU/task  [load {load}]\n"
                  f"  {'  then the floor, xargs -P2':<44} {n:>6,} tasks {p.floor_rate:>7,.0f}/s"
                  f"  share {p.share:4.2f}           [load {floor_load}]", flush=True)
    return res


# ---------------------------------------------------------------- the report


def med_range(values: list[float], fmt: str) -> str:
    mid = format(statistics.median(values), fmt)
    if len(values) == 1:
        return mid
    return f"{mid} ({format(min(values), fmt)}..{format(max(values), fmt)})"


def report(res: Results, args) -> None:
    print(f"\n== /bin/true tasks, {args.repeat} interleaved repetition(s): median (range)")
    print(f"{'contender':<46} {'tasks':>6}  {'tasks/s':<20} {'share of floor':<18} "
          f"{'own CPU ms/task':<20} load (1 min) at the runs")
    floors = [p for pairs in res.pairs.values() for p in pairs]
    for n in sorted({p.tasks for p in floors}, reverse=True):
        runs = [p for p in floors if p.tasks == n]
        loads = [float(p.floor_load.split()[0]) for p in runs]
        print(f"{'xargs -P2 (the floor)':<46} {n:>6,}  "
              f"{med_range([p.floor_rate for p in runs], ',.0f'):<20} {'1':<18} "
              f"{med_range([1000 * p.floor_cpu / p.tasks for p in runs], '.2f'):<20} "
              f"{min(loads):.2f}..{max(loads):.2f} ({len(runs)} runs)")
    for c in CONTENDERS:
        name = c.label if c.system == "hpcqueue" else f"{c.label} ({version(c.system)})"
        if c.system not in args.only:
            continue
        if not installed(c.system):
            print(f"{c.label:<46} {NOT_INSTALLED}")
        elif c in res.failed and c not in res.pairs:
            print(f"{name:<46} failed: {res.failed[c]}")
        elif c in res.pairs:
            pairs = res.pairs[c]
            print(f"{name:<46} {pairs[0].tasks:>6,}  "
                  f"{med_range([p.rate for p in pairs], ',.0f'):<20} "
                  f"{med_range([p.share for p in pairs], '.2f'):<18} "
                  f"{med_range([p.ms_per_task for p in pairs], '.2f'):<20} "
                  f"{' '.join(p.load.split()[0] for p in pairs)}")
    print("\nThe floor's CPU is everything it ran (xargs, seq and the tasks); a contender's is"
          "\nits server and worker processes' own (HyperQueue and hypershell: the one process"
          "\nholding their server, workers and client), the tasks not counted.")


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000, help="tasks per hpcqueue run "
                    "(and its floor run); default 10,000")
    ap.add_argument("--peer-tasks", type=int, help="tasks per HyperQueue or hypershell run "
                    "(and its floor run); default: --tasks, at most 2,000 (they run at a "
                    "few hundred tasks/s)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--only", default=",".join(SYSTEMS),
                    help=f"which systems to run, comma-separated, from {','.join(SYSTEMS)}")
    ap.add_argument("--tmpdir", help="where temporary server dirs go")
    args = ap.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SYSTEMS))
    if unknown or not args.only:
        ap.error(f"--only takes systems from {','.join(SYSTEMS)}, not {','.join(unknown)!r}")
    if args.tasks < 1 or args.repeat < 1 or (args.peer_tasks is not None
                                             and args.peer_tasks < 1):
        ap.error("--tasks, --peer-tasks and --repeat must be at least 1")
    if args.peer_tasks is None:
        args.peer_tasks = min(args.tasks, 2_000)
    return args


def _exit_on_signal(sig, frame):
    raise SystemExit(128 + sig)  # unwinds through the finally blocks that clean up


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    contenders = [c for c in CONTENDERS if c.system in args.only and installed(c.system)]
    print(f"hpcqueue against its peers: {args.tasks:,} tasks per hpcqueue run, "
          f"{args.peer_tasks:,} per peer run, each followed by `seq N | xargs -P2 -n1 true`; "
          f"{os.cpu_count()} cpus, load {loadavg()}")
    for system in args.only:
        if system != "hpcqueue":
            print(f"  {system}: {version(system) if installed(system) else NOT_INSTALLED}")
    root = Path(tempfile.mkdtemp(prefix="hpcqueue-peers-", dir=args.tmpdir))
    started = time.perf_counter()
    try:
        with Processes() as procs:
            res = measure(procs, root, contenders, args)
        report(res, args)
        print(f"\ndone in {time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
