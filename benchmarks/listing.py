"""Listing figures on a 1,000,000-task array with every task finished (issue 11).

    python3 benchmarks/listing.py            # 1,000,000 tasks
    python3 benchmarks/listing.py --tasks 100000

The job is built by a real server and a real worker with the no-fork executor
(`worker start --executor noop`, `submit --stdout none --stderr none`), so the columns are
the ones a live server holds.  Then, with the real command line:

- `task list J --limit 10`: wall time of the command (median of 5; it includes the start-up
  of `python -m hpcqueue`);
- `task list J --output ndjson > file`: rows/s, and the server's RSS growth meanwhile
  (sampled every 10 ms);
- meanwhile, another client's `job_info` requests, one after the other: their latency;
- `job info J` and `job list`: wall time of the command (median of 5).

Figures only: a missed target never changes the exit code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HQ, Processes, Setup, memory_kib, start_server, start_workers, stop_cluster

TARGETS = {"limit": 0.2, "rows": 500_000, "rss_mb": 20, "other": 0.050, "info": 0.050}


def timed(argv: list[str], out=subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=out, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--tmpdir")
    args = ap.parse_args()
    n = args.tasks
    root = Path(tempfile.mkdtemp(prefix="hq-listing-", dir=args.tmpdir))
    with Processes() as procs:
        c, _ = start_server(procs, root)
        try:
            sd = ["--server-dir", str(c.server_dir)]
            t0 = time.perf_counter()
            c.cli("submit", "--array", f"1-{n}", "--stdout", "none", "--stderr", "none",
                  "--", "true")
            start_workers(procs, c, Setup((1024,), "noop"))
            c.cli("job", "wait", "1", timeout=3600)
            print(f"built: {n:,} finished tasks in {time.perf_counter() - t0:.1f}s "
                  "(real server, one noop worker)")
            info = c.ask("job_info", job=1)
            assert info["finished"] == n, info

            def median(argv):
                return statistics.median(timed(argv) for _ in range(5))

            limit = median(HQ + ["task", "list", "1", *sd, "--limit", "10"])
            job_info = median(HQ + ["job", "info", "1", *sd])
            job_list = median(HQ + ["job", "list", *sd])
            startup = median(HQ + ["--version"])

            pid = c.server.pid
            rss0 = memory_kib(pid)
            peak = [rss0]
            lat: list[float] = []
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], memory_kib(pid))
                    time.sleep(0.01)

            def other_client():
                while not done.is_set():
                    t = time.perf_counter()
                    c.ask("job_info", job=1)
                    lat.append(time.perf_counter() - t)
                    time.sleep(0.005)

            threads = [threading.Thread(target=sample), threading.Thread(target=other_client)]
            for t in threads:
                t.start()
            out_path = root / "tasks.ndjson"
            with open(out_path, "wb") as out:
                took = timed(HQ + ["task", "list", "1", *sd, "--output", "ndjson"], out)
            done.set()
            for t in threads:
                t.join()
            lines = sum(1 for _ in open(out_path, "rb"))
            assert lines == n, lines
        finally:
            stop_cluster(procs, c)
    shutil.rmtree(root, ignore_errors=True)
    lat.sort()
    print(f"python -m hpcqueue --version (start-up floor): {startup:.3f} s")
    print(f"task list --limit 10: {limit:.3f} s  [target < {TARGETS['limit']} s]")
    print(f"task list --output ndjson > file: {took:.2f} s, {n / took:,.0f} rows/s  "
          f"[target >= {TARGETS['rows']:,}]")
    print(f"server RSS growth during it: {(peak[0] - rss0) / 1024:.1f} MiB  "
          f"[target < {TARGETS['rss_mb']} MB]")
    print(f"another client's job_info meanwhile: {len(lat)} requests, median "
          f"{statistics.median(lat) * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms  "
          f"[target < {TARGETS['other'] * 1000:.0f} ms]")
    print(f"job info: {job_info:.3f} s, job list: {job_list:.3f} s (commands, start-up "
          f"included)  [target < {TARGETS['info'] * 1000:.0f} ms]")


if __name__ == "__main__":
    main()
