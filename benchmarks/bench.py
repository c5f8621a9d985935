"""Throughput, memory and restore benchmarks for hpcqueue.

Run from the repository root:

    python3 benchmarks/bench.py            # full sizes, a few minutes
    python3 benchmarks/bench.py --quick    # small sizes, well under a minute

Everything runs on this machine: a real server (`hpcqueue server start`) and
real workers (`hpcqueue worker start`) as subprocesses listening on
127.0.0.1, driven by the real command line (`hpcqueue submit`, `hpcqueue job
wait all`).  Each measurement gets a fresh server in a fresh temporary server
dir.  The script prints figures next to their targets; it never fails on a
missed target.  See benchmarks/README.md for what each figure means.

Figures:

1. end-to-end tasks/s for `/bin/true` tasks, against `xargs -P2` as a floor,
   and the CPU the server and workers spend per task;
2. the server's dispatch rate with the no-fork executor (`--executor noop`);
3. server RSS per waiting task of one big array job;
4. throughput with the journal on vs off;
5. time to restore a journal of about a million events;
6. `submit --stream`: files left and `job cat --tasks` time on a big streamed job
   (benchmarks/stream.py);
7. worker throughput with --stream, a file per task and --stdout none (benchmarks/stream.py);
8. listings on a 1,000,000-task job (benchmarks/listing.py);
L. 1,000 and 10,000 simulated workers and `job list` clients against one server
   (benchmarks/loadgen.py; `--only L`).
s. spawning and output (issue 15): one worker --cpus 2, journal on, `--stdout none` and
   the default output files, each run paired with an `xargs` floor run; with `--baseline
   REF`, the same runs of the hpcqueue of git commit REF, interleaved.

Figures 6 to 8 run their own scripts, each with a fresh server of its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hpcqueue
from hpcqueue.journal import JournalWriter, restore_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (
    NO_OUTPUT, RESTORE_TIMEOUT, Processes, Setup, median_run, memory_kib, run_floor,
    run_tasks, start_server, stop_cluster,
)

TARGET_RATIO = 1.15  # end-to-end time / xargs floor
TARGET_DISPATCH = 50_000  # tasks/s
TARGET_BYTES = 64  # per waiting array task
TARGET_JOURNAL_COST = 10.0  # percent
TARGET_RESTORE = 3.0  # seconds per million events

NOOP_BATCH_CPUS = 1024  # a noop worker this wide gets big batches per round


@dataclass(frozen=True)
class Sizes:
    tasks: int  # /bin/true tasks per end-to-end run
    noop: int  # tasks per noop run
    array: int  # tasks of the array job held in memory
    events: int  # events in the journal to restore


FULL = Sizes(tasks=10_000, noop=200_000, array=1_000_000, events=1_000_000)
QUICK = Sizes(tasks=2_000, noop=20_000, array=100_000, events=100_000)


# ---------------------------------------------------------------- output


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def line(label: str, value: str, target: str | None = None, runs: list | None = None,
         fmt: str = ",.0f") -> None:
    """One figure: label, value, then the target and the range over repeated runs."""
    text = f"  {label:<42} {value:>18}"
    if target:
        text += f"   [target {target}]"
    if runs and len(runs) > 1:
        text += f"   (runs {min(runs):{fmt}}..{max(runs):{fmt}})"
    print(text, flush=True)


# ---------------------------------------------------------------- figures


def figure_end_to_end(procs: Processes, root: Path, sizes: Sizes, repeat: int) -> None:
    n = sizes.tasks
    heading(f"1. End-to-end: {n:,} x /bin/true, submit -> `job wait all` returns")
    for setup in (Setup(workers=(2,)), Setup(workers=(1, 1))):
        floors, runs = [], []
        for _ in range(repeat):
            floors.append(run_floor(n))
            runs.append(run_tasks(procs, root, setup, n))
        floor, run = median_run(floors), median_run(runs)
        print(f"  -- {setup.describe()}")
        line("hpcqueue tasks/s", f"{run.rate:,.0f}", runs=[r.rate for r in runs])
        line("  (server clock: submitted -> ended)", f"{run.server_rate:,.0f}")
        line("  (time in `submit` itself)", f"{run.submit:.2f} s")
        line("floor `seq | xargs -P2 -n1 true` tasks/s", f"{floor.rate:,.0f}",
             runs=[f.rate for f in floors])
        line("ratio hpcqueue time / floor time", f"{run.wall / floor.wall:.2f}x",
             f"<= {TARGET_RATIO}x")
        line("server CPU per task", f"{run.ms_per_task(run.server_cpu):.3f} ms")
        line("worker CPU per task", f"{run.ms_per_task(run.worker_cpu):.3f} ms")
        line("server + worker CPU per task",
             f"{run.ms_per_task(run.server_cpu + run.worker_cpu):.3f} ms")
        line("task processes CPU per task", f"{run.ms_per_task(run.task_cpu):.3f} ms")
        line("floor CPU per task (xargs + true)", f"{1000 * floor.cpu / n:.3f} ms")


def figure_spawning(procs: Processes, root: Path, sizes: Sizes, repeat: int,
                    baseline: str | None) -> None:
    n = sizes.tasks
    heading(f"s. Spawning and output: {n:,} x /bin/true, 1 worker --cpus 2, journal on")
    print(f"  loadavg before: {loadavg()}", flush=True)
    versions = {"this": None}
    if baseline:
        versions[baseline] = export_package(baseline, root)
    modes = {"--stdout none": NO_OUTPUT, "default output (2 files/task)": ()}
    setup = Setup(workers=(2,), journal=True)
    pairs: dict = {(v, m): [] for v in versions for m in modes}
    saved = os.environ.get("PYTHONPATH")
    try:
        for _ in range(repeat):  # versions and modes alternate: drift hits them alike
            for version, path in versions.items():
                set_pythonpath(saved if path is None else path)  # what the processes run
                for mode, flags in modes.items():
                    floor = run_floor(n)
                    pairs[version, mode].append(
                        (floor, run_tasks(procs, root, setup, n, flags)))
    finally:
        set_pythonpath(saved)
    for (version, mode), runs in pairs.items():
        print(f"  -- hpcqueue {version}, {mode}")
        shares = [r.rate / f.rate for f, r in runs]
        line("tasks/s (submit -> job wait)", f"{statistics.median(r.rate for _, r in runs):,.0f}",
             runs=[r.rate for _, r in runs])
        line("share of the paired floor's rate", f"{statistics.median(shares):.2f}x",
             ">= 1.0x", shares, ".2f")
        for label, cpu in (("server CPU per task", lambda r: r.server_cpu),
                           ("worker CPU per task", lambda r: r.worker_cpu),
                           ("server + worker CPU per task",
                            lambda r: r.server_cpu + r.worker_cpu)):
            ms = [r.ms_per_task(cpu(r)) for _, r in runs]
            target = "<= 0.1 ms" if label.startswith("server +") else None
            line(label, f"{statistics.median(ms):.3f} ms", target, ms, ".3f")
    for version in versions:
        none, files = (statistics.median(r.rate for _, r in pairs[version, m]) for m in modes)
        line(f"{version}: default output / --stdout none rate", f"{files / none:.2f}x",
             ">= 0.90x")
    print(f"  loadavg after: {loadavg()}", flush=True)


def set_pythonpath(value: str | None) -> None:
    if value is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = value


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def export_package(ref: str, root: Path) -> str:
    """The hpcqueue package of git commit REF, in a folder for PYTHONPATH."""
    dest = Path(tempfile.mkdtemp(prefix="baseline-", dir=root))
    repo = HERE.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref, "hpcqueue"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return str(dest)


def figure_dispatch(procs: Processes, root: Path, sizes: Sizes, repeat: int) -> None:
    n = sizes.noop
    heading(f"2. Dispatch with the no-fork executor: {n:,} noop tasks")
    for setup in (Setup(workers=(2,), executor="noop"),
                  Setup(workers=(NOOP_BATCH_CPUS,), executor="noop")):
        runs = [run_tasks(procs, root, setup, n) for _ in range(repeat)]
        run = median_run(runs)
        print(f"  -- {setup.describe()}")
        line("dispatch rate (server clock)", f"{run.server_rate:,.0f} tasks/s",
             f">= {TARGET_DISPATCH:,} tasks/s", [r.server_rate for r in runs])
        line("wall rate (incl. CLI start-up)", f"{run.rate:,.0f} tasks/s")
        line("server CPU per task", f"{1e6 * run.server_cpu / n:.1f} us")
        line("worker CPU per task", f"{1e6 * run.worker_cpu / n:.1f} us")


def figure_memory(procs: Processes, root: Path, sizes: Sizes) -> None:
    n = sizes.array
    heading(f"3. Server memory: one {n:,}-task array job waiting, no workers")
    c, _ = start_server(procs, root)
    try:
        pid = c.server.pid
        before = memory_kib(pid)
        c.cli("submit", "--array", f"1-{n}", "--stdout", "none", "--stderr", "none",
              "--", "/bin/true")
        waiting = c.ask("server_info")["waiting"]
        after, peak = memory_kib(pid), memory_kib(pid, "VmHWM")
    finally:
        stop_cluster(procs, c)
    line("waiting tasks (server_info)", f"{waiting:,}")
    line("VmRSS before submit", f"{before / 1024:.1f} MiB")
    line("VmRSS after submit", f"{after / 1024:.1f} MiB")
    line("VmHWM (peak) after submit", f"{peak / 1024:.1f} MiB")
    line("bytes per waiting task", f"{(after - before) * 1024 / n:.2f}",
         f"<= {TARGET_BYTES}")


def figure_journal(procs: Processes, root: Path, sizes: Sizes, repeat: int) -> None:
    heading("4. Journal cost: throughput with --journal vs without")
    cases = [
        ("noop, --cpus 2", (2,), "noop", sizes.noop),
        (f"noop, --cpus {NOOP_BATCH_CPUS}", (NOOP_BATCH_CPUS,), "noop", sizes.noop),
        ("/bin/true, --cpus 2", (2,), "process", sizes.tasks),
    ]
    for label, workers, executor, n in cases:
        off, on = [], []
        for _ in range(repeat):  # alternate, so drift hits both sides alike
            off.append(run_tasks(procs, root, Setup(workers, executor, False), n))
            on.append(run_tasks(procs, root, Setup(workers, executor, True), n))
        rate_off = statistics.median(r.server_rate for r in off)
        rate_on = statistics.median(r.server_rate for r in on)
        cpu_off = statistics.median(r.server_cpu for r in off) / n
        cpu_on = statistics.median(r.server_cpu for r in on) / n
        print(f"  -- {label}: {n:,} tasks (rates by the server clock)")
        line("journal off", f"{rate_off:,.0f} tasks/s", runs=[r.server_rate for r in off])
        line("journal on", f"{rate_on:,.0f} tasks/s", runs=[r.server_rate for r in on])
        line("throughput cost of the journal", f"{100 * (1 - rate_on / rate_off):.1f} %",
             f"<= {TARGET_JOURNAL_COST:g} %")
        line("server CPU per task, off / on", f"{1e6 * cpu_off:.1f} / {1e6 * cpu_on:.1f} us")
        line("server CPU cost of the journal", f"{100 * (cpu_on / cpu_off - 1):.1f} %")
        line("journal bytes per task", f"{statistics.median(r.journal_bytes for r in on) / n:.0f}")


def job_spec(n: int, submit_dir: str) -> dict:
    """A spec shaped like `hpcqueue submit --array 1-n -- /bin/true` sends."""
    return {
        "name": "true", "kind": "array", "cmd": ["/bin/true"], "shell": False,
        "ids": [[1, n, 1]], "entries": None, "cpus": 1, "res": {}, "priority": 0,
        "max_retries": 0, "crash_limit": 5, "time_limit": None, "time_request": None,
        "stdout": "none", "stderr": "none", "cwd": None, "env": {},
        "submit_dir": submit_dir,
    }


def build_journal(path: Path, events: int) -> tuple[int, int]:
    """Write a journal of about `events` events; returns (events, tasks).

    A server start, one array job, two workers, then for every task a `start`
    and a `done` event carrying that one task, alternating between the workers:
    the shape a server running short tasks on narrow workers writes.
    """
    tasks = max(1, (events - 4) // 2)
    w = JournalWriter(path, fsync_interval=3600)
    w.prepare(None)
    t = time.time()
    # one frame per event, as the server writes them
    w.write([{"e": "server", "t": t, "v": hpcqueue.__version__}])
    w.write([{"e": "job", "id": 1, "spec": job_spec(tasks, str(path.parent)), "t": t}])
    for wid in (1, 2):
        w.write([{"e": "worker", "id": wid, "t": t, "info": {
            "hostname": f"node{wid}", "pid": 1000 + wid, "cpus": 1,
            "version": hpcqueue.__version__}}])
    for i in range(tasks):
        wid = 1 + i % 2
        t += 0.0005
        w.write([{"e": "start", "w": wid, "tasks": [1, [i]], "t": t}])
        w.write([{"e": "done", "w": wid, "r": [[1, i, 0, 0, t, t + 0.0004, None]],
                  "t": t + 0.0005}])
    w.close()
    return 4 + 2 * tasks, tasks


def figure_restore(procs: Processes, root: Path, sizes: Sizes) -> None:
    heading(f"5. Restore: a journal of ~{sizes.events:,} events")
    path = Path(tempfile.mkdtemp(prefix="restore-", dir=root)) / "journal"
    t0 = time.perf_counter()
    count, tasks = build_journal(path, sizes.events)
    built = time.perf_counter() - t0
    per_million = 1_000_000 / count
    line("events written (JournalWriter)", f"{count:,}")
    line("journal size", f"{path.stat().st_size / 2**20:.1f} MiB")
    line("time to write it", f"{built:.2f} s")

    t0 = time.perf_counter()
    state, reader = restore_file(path)
    restore = time.perf_counter() - t0
    finished = state.jobs[1].summary()["finished"]
    if reader.count != count or finished != tasks:
        raise RuntimeError(f"restore read {reader.count} events, {finished} tasks finished")
    del state
    line("restore_file() in-process", f"{restore:.2f} s")
    line("  per million events", f"{restore * per_million:.2f} s", f"<= {TARGET_RESTORE:g} s")

    c, empty = start_server(procs, root, path.parent / "empty-journal")
    stop_cluster(procs, c)
    c, full = start_server(procs, root, path, timeout=RESTORE_TIMEOUT)
    try:
        restored = c.ask("server_info").get("restored_events")
    finally:
        stop_cluster(procs, c)
    line("server start, empty journal", f"{empty:.2f} s")
    line(f"server start, this journal ({restored:,} ev)", f"{full:.2f} s")
    line("  difference per million events", f"{(full - empty) * per_million:.2f} s",
         f"<= {TARGET_RESTORE:g} s")


# ---------------------------------------------------------------- main


def print_header(args, sizes: Sizes, root: Path) -> None:
    print("hpcqueue benchmark", time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"  hpcqueue {hpcqueue.__version__} ({Path(hpcqueue.__file__).parent}), "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"  {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), temp dir {root}")
    print(f"  mode {'quick' if args.quick else 'full'}, {args.repeat} run(s) per "
          f"measurement (median shown), sizes: {sizes.tasks:,} tasks, {sizes.noop:,} noop, "
          f"{sizes.array:,} array, {sizes.events:,} events", flush=True)


HERE = Path(__file__).resolve().parent


def figure_script(script: str, *argv: str, title: str | None = None) -> None:
    """A figure that a script of its own measures (it prints its targets)."""
    print(flush=True)
    if title:
        heading(title)
    sys.stdout.flush()
    subprocess.run([sys.executable, str(HERE / script), *argv], check=False)


FIGURES = {
    "1": lambda p, r, s, a: figure_end_to_end(p, r, s, a.repeat),
    "2": lambda p, r, s, a: figure_dispatch(p, r, s, a.repeat),
    "3": lambda p, r, s, a: figure_memory(p, r, s),
    "4": lambda p, r, s, a: figure_journal(p, r, s, a.repeat),
    "5": lambda p, r, s, a: figure_restore(p, r, s),
    "6": lambda p, r, s, a: figure_script("stream.py", "--only", "6", "--repeat", str(a.repeat),
                                          *(["--quick"] if a.quick else [])),
    "7": lambda p, r, s, a: figure_script("stream.py", "--only", "7", "--repeat", str(a.repeat),
                                          *(["--quick"] if a.quick else [])),
    "8": lambda p, r, s, a: figure_script(
        "listing.py", "--tasks", str(100_000 if a.quick else 1_000_000),
        title=f"8. Listings on a {100_000 if a.quick else 1_000_000:,}-task job, every task "
              "finished"),
    "L": lambda p, r, s, a: figure_script(
        "loadgen.py", "--repeat", str(a.repeat),
        *(["--workers", "1000", "--tasks", "200000"] if a.quick else []),
        title="L. Simulated workers: dispatch rate, RSS per worker, `job list` latency"),
    "s": lambda p, r, s, a: figure_spawning(p, r, s, a.repeat, a.baseline),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    ap.add_argument("--repeat", type=int, help="runs per throughput measurement, median "
                    "shown (default 3, or 1 with --quick)")
    ap.add_argument("--only", default="".join(FIGURES), help="which figures to run, e.g. 25")
    ap.add_argument("--tmpdir", help="where temporary server dirs and journals go")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    ap.add_argument("--baseline", metavar="REF", help="figure s: also run the hpcqueue of "
                    "this git commit (server, worker and CLI), interleaved")
    args = ap.parse_args(argv)
    if not args.only or set(args.only) - set(FIGURES):
        ap.error(f"--only takes figure numbers from {''.join(FIGURES)}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.repeat = max(1, args.repeat)
    return args


def _exit_on_signal(sig, frame):
    raise SystemExit(128 + sig)  # unwinds through the finally blocks that clean up


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    root = Path(tempfile.mkdtemp(prefix="hpcqueue-bench-", dir=args.tmpdir))
    started = time.perf_counter()
    try:
        print_header(args, sizes, root)
        with Processes() as procs:
            for key in args.only:
                FIGURES[key](procs, root, sizes, args)
        print(f"\ndone in {time.perf_counter() - started:.0f} s")
    finally:
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
