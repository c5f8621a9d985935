"""The benchmarks' harness: processes, /proc readers, a server with its workers, timed runs.

Every process runs in a process group of its own and is stopped (SIGTERM, then
SIGKILL) on any exit; every wait is bounded.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcqueue.access import ACCESS_FILE, connect

HQ = [sys.executable, "-m", "hpcqueue"]
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

START_TIMEOUT = 30.0  # server or worker start-up
RESTORE_TIMEOUT = 300.0  # server start-up on a big journal
STOP_TIMEOUT = 15.0  # graceful stop before SIGKILL
CLI_TIMEOUT = 120.0  # one `hpcqueue` command other than `job wait`
RUN_TIMEOUT = 900.0  # `job wait all` and the xargs floor


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
                 timeout: float = START_TIMEOUT, extra: list[str] | None = None
                 ) -> tuple[Cluster, float]:
    """Start a server in a new dir under `root` (EXTRA: more `server start` options);
    returns it and its start-up seconds."""
    d = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    server_dir = d / "server"
    argv = HQ + ["server", "start", "--server-dir", str(server_dir), "--host", HOST]
    if journal is not None:
        argv += ["--journal", str(journal)]
    argv += extra or []
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


NO_OUTPUT = ("--stdout", "none", "--stderr", "none")


def run_tasks(procs: Processes, root: Path, setup: Setup, n: int,
              flags: tuple[str, ...] = NO_OUTPUT) -> Run:
    """Fresh server and workers; submit n /bin/true tasks (with FLAGS) and wait for them."""
    journal = None
    if setup.journal:
        journal = Path(tempfile.mkdtemp(prefix="journal-", dir=root)) / "journal"
    c, _ = start_server(procs, root, journal)
    try:
        start_workers(procs, c, setup)
        before = cpu_snapshot(c)
        t0 = time.perf_counter()
        c.cli("submit", "--array", f"1-{n}", *flags, "--", "/bin/true")
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
