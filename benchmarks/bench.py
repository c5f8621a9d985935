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
5. time to restore a journal of about a million events.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import hpcqueue
from hpcqueue.access import ACCESS_FILE, connect
from hpcqueue.journal import JournalWriter, restore_file

HQ = [sys.executable, "-m", "hpcqueue"]
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

START_TIMEOUT = 30.0  # server or worker start-up
RESTORE_TIMEOUT = 300.0  # server start-up on a big journal
STOP_TIMEOUT = 15.0  # graceful stop before SIGKILL
CLI_TIMEOUT = 120.0  # one `hpcqueue` command other than `job wait`
RUN_TIMEOUT = 900.0  # `job wait all` and the xargs floor

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


# ---------------------------------------------------------------- /proc readers


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of a process: utime+stime, cutime+cstime."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # the command name (field 2) may hold spaces and parentheses: split after it
    fields = text[text.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A `/proc/PID/status` memory field (VmRSS, VmHWM, ...) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (and theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- processes


class Processes:
    """Every long-running process this script starts; kills leftovers on exit.

    Each process runs in a session of its own, so killing its process group
    also kills whatever it started (a worker's tasks).
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        for proc in list(self.procs):
            self.stop(proc, graceful=False)

    def spawn(self, argv: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=cwd,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, graceful: bool = True) -> None:
        """SIGTERM the process (if graceful) and wait; SIGKILL its group if it lingers."""
        if proc.poll() is None and graceful:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(proc, signal.SIGKILL)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"warning: process {proc.pid} did not die", file=sys.stderr)
        if proc in self.procs and proc.returncode is not None:
            self.procs.remove(proc)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- a server and its workers


@dataclass(frozen=True)
class Setup:
    """One server configuration: worker widths, executor, journal on or off."""

    workers: tuple[int, ...]  # --cpus of each worker
    executor: str = "process"
    journal: bool = False

    def describe(self) -> str:
        widths = {c: self.workers.count(c) for c in self.workers}
        ws = " + ".join(f"{k} worker{'s' if k > 1 else ''} --cpus {c}"
                        for c, k in widths.items())
        return f"{ws}{', noop' if self.executor == 'noop' else ''}" \
               f"{', journal' if self.journal else ''}"


@dataclass
class Cluster:
    dir: Path
    server_dir: Path
    server: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> str:
        """Run one `hpcqueue` command against this server; returns its stdout."""
        k = 1 if args[0] == "submit" else 2  # the words naming the command: `job wait`
        argv = HQ + [*args[:k], "--server-dir", str(self.server_dir), *args[k:]]
        r = subprocess.run(argv, check=False, cwd=self.dir, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"`hpcqueue {' '.join(args)}` exited {r.returncode}: "
                               f"{r.stderr.strip()}")
        return r.stdout

    def ask(self, op: str, **fields) -> dict:
        """One request through hpcqueue's own client (for polling, not for timing)."""
        conn = connect(self.server_dir, timeout=10)
        try:
            conn.send({"op": op, **fields})
            reply = conn.recv()
        finally:
            conn.close()
        if not reply.get("ok"):
            raise RuntimeError(f"request {op} failed: {reply.get('error')}")
        return reply


def start_server(procs: Processes, root: Path, journal: Path | None = None,
                 timeout: float = START_TIMEOUT) -> tuple[Cluster, float]:
    """Start a server in a new dir under `root`; returns it and its start-up seconds."""
    d = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    server_dir = d / "server"
    argv = HQ + ["server", "start", "--server-dir", str(server_dir), "--host", HOST]
    if journal is not None:
        argv += ["--journal", str(journal)]
    t0 = time.perf_counter()
    proc = procs.spawn(argv, d / "server.log", cwd=d)
    try:
        wait_for_file(server_dir / ACCESS_FILE, proc, timeout, d / "server.log")
    except BaseException:
        procs.stop(proc, graceful=False)
        raise
    return Cluster(d, server_dir, proc), time.perf_counter() - t0


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until `path` exists (a server writes its access record once it listens)."""
    deadline = time.perf_counter() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited {proc.returncode}:\n{log_tail(log)}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the server did not start within {timeout:g}s")
        time.sleep(0.005)


def start_workers(procs: Processes, c: Cluster, setup: Setup) -> None:
    for k, cpus in enumerate(setup.workers):
        argv = HQ + ["worker", "start", "--server-dir", str(c.server_dir), "--cpus", str(cpus),
                     "--manager", "none", "--executor", setup.executor]
        c.workers.append(procs.spawn(argv, c.dir / f"worker{k}.log", cwd=c.dir))
    deadline = time.monotonic() + START_TIMEOUT
    while c.ask("server_info")["workers"] < len(setup.workers):
        for k, w in enumerate(c.workers):
            if w.poll() is not None:
                raise RuntimeError(f"worker {k} exited {w.returncode}:\n"
                                   f"{log_tail(c.dir / f'worker{k}.log')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers did not connect within {START_TIMEOUT:g}s")
        time.sleep(0.05)


def stop_cluster(procs: Processes, c: Cluster) -> None:
    """SIGTERM the server (it tells its workers to stop), then reap everything."""
    procs.stop(c.server)
    for w in c.workers:
        try:
            w.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        procs.stop(w, graceful=False)


# ---------------------------------------------------------------- one timed run


@dataclass
class Run:
    tasks: int
    wall: float  # submit started -> `job wait all` returned
    submit: float  # submit started -> submit returned
    makespan: float  # the server's own clock: job submitted -> job ended
    server_cpu: float
    worker_cpu: float
    task_cpu: float  # the workers' reaped children: the task processes
    journal_bytes: int = 0

    @property
    def rate(self) -> float:
        return self.tasks / self.wall

    @property
    def server_rate(self) -> float:
        return self.tasks / self.makespan if self.makespan > 0 else float("nan")

    def ms_per_task(self, seconds: float) -> float:
        return 1000 * seconds / self.tasks


def cpu_snapshot(c: Cluster) -> tuple[float, float, float]:
    """(server, workers, workers' children) CPU seconds so far."""
    server = cpu_seconds(c.server.pid)[0]
    own = children = 0.0
    for w in c.workers:
        a, b = cpu_seconds(w.pid)
        own += a
        children += b
    return server, own, children


def run_tasks(procs: Processes, root: Path, setup: Setup, n: int) -> Run:
    """Fresh server and workers; submit n /bin/true tasks and wait for them."""
    journal = None
    if setup.journal:
        journal = Path(tempfile.mkdtemp(prefix="journal-", dir=root)) / "journal"
    c, _ = start_server(procs, root, journal)
    try:
        start_workers(procs, c, setup)
        before = cpu_snapshot(c)
        t0 = time.perf_counter()
        c.cli("submit", "--array", f"1-{n}", "--stdout", "none", "--stderr", "none",
              "--", "/bin/true")
        t1 = time.perf_counter()
        c.cli("job", "wait", "all", timeout=RUN_TIMEOUT)
        t2 = time.perf_counter()
        after = cpu_snapshot(c)
        job = c.ask("jobs")["jobs"][0]
        journal_bytes = c.ask("server_info").get("journal_bytes") or 0
    finally:
        stop_cluster(procs, c)
    if job["finished"] != n:
        raise RuntimeError(f"{setup.describe()}: {job['finished']} of {n} tasks finished")
    server, worker, tasks = (b - a for a, b in zip(before, after))
    return Run(n, t2 - t0, t1 - t0, job["ended"] - job["submitted"], server, worker, tasks,
               journal_bytes)


@dataclass
class Floor:
    tasks: int
    wall: float
    cpu: float  # xargs and its /bin/true processes

    @property
    def rate(self) -> float:
        return self.tasks / self.wall


def run_floor(n: int) -> Floor:
    """`seq n | xargs -P2 -n1 true`: the same processes with no queue at all."""
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", f"seq {n} | xargs -P2 -n1 true"], check=True,
                   timeout=RUN_TIMEOUT)
    wall = time.perf_counter() - t0
    return Floor(n, wall, children_cpu() - cpu0)


def median_run(runs: list):
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.wall)
    return ordered[(len(ordered) - 1) // 2]


# ---------------------------------------------------------------- output


def heading(title: str) -> None:
    print(f"\n== {title}", flush=True)


def line(label: str, value: str, target: str | None = None, runs: list | None = None) -> None:
    """One figure: label, value, then the target and the range over repeated runs."""
    text = f"  {label:<42} {value:>18}"
    if target:
        text += f"   [target {target}]"
    if runs and len(runs) > 1:
        text += f"   (runs {min(runs):,.0f}..{max(runs):,.0f})"
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
    w.append({"e": "server", "t": t, "v": hpcqueue.__version__})
    w.append({"e": "job", "id": 1, "spec": job_spec(tasks, str(path.parent)), "t": t})
    for wid in (1, 2):
        w.append({"e": "worker", "id": wid, "t": t, "info": {
            "hostname": f"node{wid}", "pid": 1000 + wid, "cpus": 1,
            "version": hpcqueue.__version__}})
    for i in range(tasks):
        wid = 1 + i % 2
        t += 0.0005
        w.append({"e": "start", "w": wid, "tasks": [1, [i]], "t": t})
        w.append({"e": "done", "w": wid, "r": [[1, i, 0, 0, t, t + 0.0004, None]],
                  "t": t + 0.0005})
        if i % 10_000 == 0:
            w.flush()
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


FIGURES = {
    "1": lambda p, r, s, a: figure_end_to_end(p, r, s, a.repeat),
    "2": lambda p, r, s, a: figure_dispatch(p, r, s, a.repeat),
    "3": lambda p, r, s, a: figure_memory(p, r, s),
    "4": lambda p, r, s, a: figure_journal(p, r, s, a.repeat),
    "5": lambda p, r, s, a: figure_restore(p, r, s),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    ap.add_argument("--repeat", type=int, help="runs per throughput measurement, median "
                    "shown (default 3, or 1 with --quick)")
    ap.add_argument("--only", default="12345", help="which figures to run, e.g. 25")
    ap.add_argument("--tmpdir", help="where temporary server dirs and journals go")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
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
