"""Streamed output figures: `submit --stream` against a file per task.

Run from the repository root:

    python3 benchmarks/stream.py            # 100,000 streamed tasks, 10,000 x true: minutes
    python3 benchmarks/stream.py --quick    # 10,000 and 2,000

Real processes, as in bench.py (benchmarks/harness.py): a fresh server per measurement
and workers started with `hpcqueue worker start --manager none`, driven by the real
command line.  Figures next to their targets; a missed target never changes the exit code.

6. Files and `job cat`: one job of N tasks `sh -c 'echo $HPCQUEUE_TASK_ID'` submitted with
   `--stream` on two workers (`--cpus 1` each).  Printed: the files the job left, and the
   wall time of `hpcqueue job cat J stdout --tasks <last 10>` (the median of 5 runs; it
   must print those 10 ids), next to `hpcqueue job failed 1` (the command line's start-up
   and one request: the floor of any command) and the same read done in this process.
7. Worker throughput: M x `/bin/true` on one worker (`--cpus 2`) with `--stdout none
   --stderr none`, with the default file per task (two files per task), and with
   `--stream`.  Printed per mode: tasks/s (server clock), and the worker's CPU per task.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import heading, line
from harness import (
    HQ, RUN_TIMEOUT, Processes, Setup, cpu_snapshot, start_server, start_workers, stop_cluster,
)

TARGET_CAT = 0.2  # seconds for `job cat --tasks` of 10 tasks
CAT_RUNS = 5


def timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120, check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[2:])}` exited {r.returncode}: {r.stderr.strip()}")
    return wall, r.stdout


def figure_files_and_cat(procs: Processes, root: Path, n: int) -> None:
    heading(f"6. --stream: {n:,} x `echo $HPCQUEUE_TASK_ID` on 2 workers, then `job cat`")
    c, _ = start_server(procs, root)
    try:
        start_workers(procs, c, Setup(workers=(1, 1)))
        t0 = time.perf_counter()
        c.cli("submit", "--array", f"1-{n}", "--stream", "out", "--", "sh", "-c",
              "echo $HPCQUEUE_TASK_ID")
        c.cli("job", "wait", "all", timeout=RUN_TIMEOUT)
        wall = time.perf_counter() - t0
        job = c.ask("jobs")["jobs"][0]
        d = c.dir / "out" / "job-1"
        names = sorted(os.listdir(d))
        size = sum((d / x).stat().st_size for x in names)
        per_task = [p for p in c.dir.rglob("*.stdout")] + [p for p in c.dir.rglob("*.stderr")]
        line("tasks finished", f"{job['finished']:,} of {n:,}")
        line("run (submit -> job wait returns)", f"{wall:.1f} s ({n / wall:,.0f} tasks/s)")
        line("files left in out/job-1", f"{len(names)}", "<= 2 logs + 2 indexes")
        for x in names:
            print(f"    {x}  {(d / x).stat().st_size:,} bytes")
        line("bytes per task (logs + indexes)", f"{size / n:.1f}")
        line("per-task .stdout/.stderr files", f"{len(per_task)}", "0")
        first = n - 9
        cat = HQ + ["job", "cat", "--server-dir", str(c.server_dir), "1", "stdout",
                    "--tasks", f"{first}-{n}"]
        info = HQ + ["job", "failed", "--server-dir", str(c.server_dir), "1"]
        cats, infos = [], []
        for _ in range(CAT_RUNS):
            wall, out = timed(cat, c.dir)
            if out.split() != [str(i) for i in range(first, n + 1)]:
                raise RuntimeError(f"job cat printed {out[:200]!r}")
            cats.append(wall)
            infos.append(timed(info, c.dir)[0])
        cats, infos = [1000 * x for x in cats], [1000 * x for x in infos]
        line(f"`job cat 1 stdout --tasks {first}-{n}`", f"{statistics.median(cats):.0f} ms",
             f"< {1000 * TARGET_CAT:.0f} ms", runs=cats)
        line("  floor: `hpcqueue job failed 1`", f"{statistics.median(infos):.0f} ms",
             runs=infos)
        from hpcqueue.streamlog import JobLogs

        reads = []
        for _ in range(CAT_RUNS):
            t0 = time.perf_counter()
            with JobLogs(str(d)) as logs:
                got = b"".join(logs.output(e, "stdout").data
                               for e in logs.ended(lambda t: first <= t <= n,
                                                   bounds=(first, n)))
            reads.append(time.perf_counter() - t0)
        assert got.split() == [str(i).encode() for i in range(first, n + 1)]
        line("  the same read in-process (JobLogs, as job cat)",
             f"{1000 * statistics.median(reads):.1f} ms")
    finally:
        stop_cluster(procs, c)


MODES = {
    "--stdout none": ["--stdout", "none", "--stderr", "none"],
    "a file per task (default)": [],
    "--stream": ["--stream", "out"],
}


def run_mode(procs: Processes, root: Path, n: int, flags: list[str]) -> tuple[float, float]:
    """(tasks/s on the server clock, worker CPU ms per task) of n x /bin/true."""
    c, _ = start_server(procs, root)
    try:
        start_workers(procs, c, Setup(workers=(2,)))
        before = cpu_snapshot(c)
        c.cli("submit", "--array", f"1-{n}", *flags, "--", "/bin/true")
        c.cli("job", "wait", "all", timeout=RUN_TIMEOUT)
        after = cpu_snapshot(c)
        job = c.ask("jobs")["jobs"][0]
    finally:
        stop_cluster(procs, c)
    if job["finished"] != n:
        raise RuntimeError(f"{job['finished']} of {n} tasks finished")
    return n / (job["ended"] - job["submitted"]), 1000 * (after[1] - before[1]) / n


def figure_throughput(procs: Processes, root: Path, n: int, repeat: int) -> None:
    heading(f"7. Worker throughput: {n:,} x /bin/true, one worker --cpus 2")
    results: dict[str, list] = {m: [] for m in MODES}
    for _ in range(repeat):  # the modes alternate, so that drift hits them alike
        for mode, flags in MODES.items():
            results[mode].append(run_mode(procs, root, n, flags))
    for mode, runs in results.items():
        rates = [r for r, _ in runs]
        cpu = statistics.median(c for _, c in runs)
        line(f"{mode}: tasks/s (server clock)", f"{statistics.median(rates):,.0f}", runs=rates)
        line("  worker CPU per task", f"{cpu:.3f} ms")


def _exit_on_signal(sig, frame):
    raise SystemExit(128 + sig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 streamed tasks, 2,000 true")
    ap.add_argument("--repeat", type=int, default=3, help="runs per throughput mode (median)")
    ap.add_argument("--only", default="67", help="which figures to run, e.g. 6")
    ap.add_argument("--tmpdir", help="where temporary server dirs go")
    args = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    root = Path(tempfile.mkdtemp(prefix="hpcqueue-stream-", dir=args.tmpdir))
    try:
        print(f"hpcqueue stream benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}, "
              f"{len(os.sched_getaffinity(0))} usable CPUs, temp dir {root}", flush=True)
        with Processes() as procs:
            if "6" in args.only:
                figure_files_and_cat(procs, root, 10_000 if args.quick else 100_000)
            if "7" in args.only:
                figure_throughput(procs, root, 2_000 if args.quick else 10_000,
                                  1 if args.quick else max(1, args.repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
