"""Dashboard figures on a 1,000,000-task array (issue 12).

    python3 benchmarks/dashboard.py            # 1,000,000 tasks
    python3 benchmarks/dashboard.py --tasks 100000

With a real server and `submit --array 1-N --stdout none --stderr none -- true`:

- the `watch` request's first reply (everything) on the job of N waiting tasks, through
  hpcqueue's own client (median of 5);
- the dashboard's start-up: `python -m hpcqueue dashboard` launched in a detached tmux
  session (120x40) until the screen shows the job and its first page of tasks, the screen
  polled every 20 ms (median of 3; Python's start-up included);
- then one worker with the no-fork executor runs the N tasks while a `watch` client counts
  the updates it is pushed: how many, and the most in any one second (the server coalesces:
  4 a second at most with the default interval of 0.25 s).

Needs tmux.  Figures only: nothing here changes the exit code.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HQ, Processes, Setup, start_server, start_workers, stop_cluster

from hpcqueue.access import connect


def watch_first(server_dir: Path) -> float:
    t0 = time.perf_counter()
    conn = connect(server_dir, timeout=30)
    try:
        conn.send({"op": "watch"})
        reply = conn.recv()
    finally:
        conn.close()
    assert reply["ok"], reply
    return time.perf_counter() - t0


def dashboard_start(tmux: str, server_dir: Path, n: int) -> float:
    sock = f"hq-bench-{uuid.uuid4().hex[:8]}"

    def t(*args):
        return subprocess.run([tmux, "-L", sock, *args], capture_output=True, text=True,
                              timeout=30)

    cmd = " ".join(shlex.quote(a) for a in HQ + ["dashboard", "--server-dir", str(server_dir)])
    t("new-session", "-d", "-x", "120", "-y", "40", "-s", "b", "sh")
    try:
        time.sleep(0.3)  # the shell's own start-up is not the dashboard's
        t0 = time.perf_counter()
        t("send-keys", "-t", "b", cmd, "Enter")
        while True:
            screen = t("capture-pane", "-p", "-t", "b").stdout
            if f"0/{n}" in screen and "tasks of job 1 [n: more]" in screen:
                took = time.perf_counter() - t0
                break
            if time.perf_counter() - t0 > 60:
                raise RuntimeError(f"the dashboard did not show the job in 60s:\n{screen}")
            time.sleep(0.02)
        t("send-keys", "-t", "b", "q")
        time.sleep(0.5)
        return took
    finally:
        t("kill-server")


def count_updates(server_dir: Path, n: int) -> tuple[int, int, float]:
    """(updates, most in one second, seconds) while the job runs to its end."""
    conn = connect(server_dir, timeout=30)
    try:
        conn.send({"op": "watch"})
        assert conn.recv()["ok"]
        per_second: Counter = Counter()
        t0 = time.monotonic()
        while True:
            up = conn.recv()["update"]
            per_second[int(time.monotonic() - t0)] += 1
            if any(j["id"] == 1 and j["finished"] == n for j in up.get("jobs", ())):
                return sum(per_second.values()), max(per_second.values()), \
                    time.monotonic() - t0
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--tmpdir")
    args = ap.parse_args()
    n = args.tasks
    tmux = shutil.which("tmux")
    if tmux is None:
        sys.exit("tmux is needed (apt-get install -y tmux)")
    root = Path(tempfile.mkdtemp(prefix="hq-dashboard-", dir=args.tmpdir))
    with Processes() as procs:
        c, _ = start_server(procs, root)
        try:
            c.cli("submit", "--array", f"1-{n}", "--stdout", "none", "--stderr", "none",
                  "--", "true")
            first = statistics.median(watch_first(c.server_dir) for _ in range(5))
            starts = [dashboard_start(tmux, c.server_dir, n) for _ in range(3)]
            floor = statistics.median(
                _timed(HQ + ["--version"]) for _ in range(5))
            start_workers(procs, c, Setup((1024,), "noop"))
            updates, most, took = count_updates(c.server_dir, n)
        finally:
            stop_cluster(procs, c)
    shutil.rmtree(root, ignore_errors=True)
    print(f"job of {n:,} waiting tasks")
    print(f"watch request, first reply (median of 5):       {first * 1000:.1f} ms")
    print(f"python -m hpcqueue --version (start-up floor):  {floor:.3f} s")
    print(f"dashboard shown, job and first page of tasks:   {statistics.median(starts):.2f} s "
          f"(median of 3: {', '.join(f'{s:.2f}' for s in starts)}) [target < 1 s]")
    print(f"while one noop worker ran the {n:,} tasks ({took:.1f} s): {updates} updates "
          f"pushed, at most {most} in one second [the default interval allows 4]")


def _timed(argv) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
