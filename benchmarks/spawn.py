"""How should a worker start its tasks?  Each strategy, measured in one process here.

    python3 benchmarks/spawn.py                 # 3 interleaved repeats of 3,000 tasks
    python3 benchmarks/spawn.py --tasks 1000 --repeat 5

An asyncio loop keeps two `/bin/true` processes running (a worker with --cpus 2), watching
each exit through a pidfd as the worker does, and starts the next task when one exits.
Strategies (how the next process is started):

- popen-loop: `subprocess.Popen(..., start_new_session=True)` in the loop's thread, as the
  worker did before issue 15 (`subprocess.DEVNULL` opens /dev/null for every call);
- popen-thread-N: the same call in a pool of N threads; /dev/null opened once;
- os.posix_spawn-loop: `os.posix_spawn(..., setsid=True)` in the loop's thread (it holds
  the GIL while the child execs, and Python 3.11 gives it no working directory: shown for
  its cost only);
- libc-loop / libc-thread-N: the C library's posix_spawn through ctypes
  (hpcqueue.worker.spawn: working directory, session, signals), in the loop's thread or
  in a ThreadPoolExecutor of N threads (a Future and a loop wake-up per task);
- libc-queue-N: the same in N threads fed by a SimpleQueue, handing pids back in a deque
  and waking the loop only when that deque was empty.

Each with `--stdout none` (/dev/null) and with two output files per task (opened where the
process is started; their folder made once).  The strategies and modes alternate within each
repeat, so that drift hits them alike.  Printed: tasks/s (median and range), this
process's CPU per task (all threads; the tasks' own CPU not counted), the loop's wall time
inside spawn calls per task (what the event loop could not do meanwhile), the
`seq | xargs -P2 -n1 true` floor measured in the same repeats, and /proc/loadavg before
and after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from hpcqueue.worker.spawn import spawner

TRUE = "/bin/true"
ENV = dict(os.environ)
ENVB = [f"{k}={v}".encode() for k, v in ENV.items()]


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Outputs:
    """Where a task's output goes: /dev/null (opened once) or two files per task."""

    def __init__(self, mode: str, root: str):
        self.mode = mode
        self.root = root
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.dirs: set[str] = set()

    def open(self, i: int) -> tuple[int, int]:
        if self.mode == "none":
            return self.devnull, self.devnull
        parent = os.path.join(self.root, "job-1")
        if parent not in self.dirs:
            os.makedirs(parent, exist_ok=True)
            self.dirs.add(parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        return (os.open(f"{parent}/{i}.stdout", flags, 0o666),
                os.open(f"{parent}/{i}.stderr", flags, 0o666))

    def close(self, fds) -> None:
        for fd in fds:
            if fd != self.devnull:
                os.close(fd)


def popen_start(out: Outputs, i: int, per_call_devnull: bool) -> subprocess.Popen:
    if per_call_devnull and out.mode == "none":
        p = subprocess.Popen([TRUE], env=ENV, cwd=out.root, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        return p
    fds = out.open(i)
    try:
        p = subprocess.Popen([TRUE], env=ENV, cwd=out.root, stdin=out.devnull,
                             stdout=fds[0], stderr=fds[1], start_new_session=True)
    finally:
        out.close(fds)
    return p


def posix_spawn_start(out: Outputs, i: int) -> int:
    fds = out.open(i)
    try:
        return os.posix_spawn(TRUE, [TRUE], ENV, setsid=True, file_actions=[
            (os.POSIX_SPAWN_DUP2, out.devnull, 0), (os.POSIX_SPAWN_DUP2, fds[0], 1),
            (os.POSIX_SPAWN_DUP2, fds[1], 2)])
    finally:
        out.close(fds)


def libc_start(sp, out: Outputs, i: int) -> int:
    fds = out.open(i)
    try:
        return sp.spawn(TRUE.encode(), [TRUE.encode()], ENVB, out.root.encode(),
                        (out.devnull, fds[0], fds[1]))
    finally:
        out.close(fds)


def strategies(sp) -> dict:
    """name -> (threads or 0 for the loop's own thread, start(out, i) -> pid or Popen)"""
    s = {
        "popen-loop": (0, lambda o, i: popen_start(o, i, True)),
        "popen-thread-1": (1, lambda o, i: popen_start(o, i, False)),
        "popen-thread-2": (2, lambda o, i: popen_start(o, i, False)),
        "os.posix_spawn-loop": (0, posix_spawn_start),
    }
    if sp is not None:
        s["libc-loop"] = (0, lambda o, i: libc_start(sp, o, i))
        s["libc-thread-1"] = (1, lambda o, i: libc_start(sp, o, i))
        s["libc-thread-2"] = (2, lambda o, i: libc_start(sp, o, i))
        s["libc-queue-1"] = (-1, lambda o, i: libc_start(sp, o, i))
        s["libc-queue-2"] = (-2, lambda o, i: libc_start(sp, o, i))
    return s


class QueueThreads:
    """Threads that take calls from a SimpleQueue and hand results back to the loop in a
    deque, waking the loop only when the deque was empty (no Future per call)."""

    def __init__(self, loop, n: int, on_result):
        self.loop = loop
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.results: collections.deque = collections.deque()
        self.on_result = on_result
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def submit(self, fn, *args) -> None:
        self.calls.put((fn, args))

    def _run(self) -> None:
        while True:
            call = self.calls.get()
            if call is None:
                return
            result = call[0](*call[1])
            wake = not self.results
            self.results.append(result)
            if wake:
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        results = self.results
        while results:
            self.on_result(results.popleft())

    def shutdown(self) -> None:
        for _ in self.threads:
            self.calls.put(None)
        for t in self.threads:
            t.join()


async def drive(n: int, width: int, threads: int, start, out: Outputs) -> tuple[float, float]:
    """Run n tasks, `width` at once; (wall seconds, loop seconds inside spawn calls)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    pool = ThreadPoolExecutor(threads) if threads > 0 else None
    queued = None
    state = {"next": 0, "ended": 0, "in_spawn": 0.0}

    def exited(fd: int, proc) -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if isinstance(proc, int):
            os.waitpid(proc, 0)
        else:
            proc.wait()  # a Popen left unwaited would be reaped by the next Popen
        state["ended"] += 1
        if state["ended"] == n:
            done.set()
        else:
            launch()

    def started(proc) -> None:
        fd = os.pidfd_open(proc if isinstance(proc, int) else proc.pid)
        loop.add_reader(fd, exited, fd, proc)

    def launch() -> None:
        if state["next"] >= n:
            return
        i = state["next"]
        state["next"] += 1
        t0 = time.perf_counter()
        if queued is not None:
            queued.submit(start, out, i)
        elif pool is None:
            started(start(out, i))
        else:
            fut = pool.submit(start, out, i)
            fut.add_done_callback(lambda f: loop.call_soon_threadsafe(started, f.result()))
        state["in_spawn"] += time.perf_counter() - t0

    if threads < 0:
        queued = QueueThreads(loop, -threads, started)
    t0 = time.perf_counter()
    for _ in range(width):
        launch()
    await done.wait()
    wall = time.perf_counter() - t0
    for p in (pool, queued):
        if p is not None:
            p.shutdown()
    return wall, state["in_spawn"]


def floor(n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"seq {n} | xargs -P2 -n1 true"], check=True)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=3000, help="tasks per run")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (median)")
    ap.add_argument("--only", default="", help="strategies whose name contains this")
    ap.add_argument("--tmpdir", help="where the output files go (file creation costs "
                                     "differ widely between folders: see README)")
    args = ap.parse_args(argv)
    sp = spawner()
    strats = {k: v for k, v in strategies(sp).items() if args.only in k}
    modes = ("none", "files")
    root = tempfile.mkdtemp(prefix="hpcqueue-spawn-", dir=args.tmpdir)
    results: dict = {(s, m): [] for s in strats for m in modes}
    floors = []
    print(f"spawn benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}, Python "
          f"{sys.version.split()[0]}, {len(os.sched_getaffinity(0))} usable CPUs, "
          f"{args.tasks:,} x {TRUE} per run, 2 at once, {args.repeat} repeats, files in "
          f"{root}; "
          f"loadavg {loadavg()}", flush=True)
    try:
        for _ in range(args.repeat):
            floors.append(floor(args.tasks))
            for name, (threads, start) in strats.items():
                for mode in modes:
                    out = Outputs(mode, root)
                    c0 = cpu()
                    wall, in_spawn = asyncio.run(drive(args.tasks, 2, threads, start, out))
                    used = cpu() - c0
                    os.close(out.devnull)
                    results[name, mode].append((args.tasks / wall, 1000 * used / args.tasks,
                                                1000 * in_spawn / args.tasks))
                    shutil.rmtree(os.path.join(root, "job-1"), ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    f = statistics.median(floors)
    print(f"floor `seq | xargs -P2 -n1 true`: {f:,.0f} tasks/s "
          f"(runs {min(floors):,.0f}..{max(floors):,.0f})")
    print(f"{'strategy':<22}{'output':<7}{'tasks/s':>8} {'(range)':<14}{'x floor':>8}"
          f"{'CPU ms/task':>12}{'loop ms/task':>13}")
    for (name, mode), runs in results.items():
        rates = [r[0] for r in runs]
        rate = statistics.median(rates)
        print(f"{name:<22}{mode:<7}{rate:>8,.0f} ({min(rates):,.0f}..{max(rates):,.0f})"
              f"{'':<2}{rate / f:>7.2f}x{statistics.median(r[1] for r in runs):>12.3f}"
              f"{statistics.median(r[2] for r in runs):>13.3f}")
    print(f"loadavg after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
