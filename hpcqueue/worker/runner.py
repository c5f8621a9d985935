"""Running tasks as subprocesses, as many at once as the worker's resources allow.

A task is spawned with ``subprocess.Popen`` in the event loop's thread (the
worker is a small process, so the fork is cheap) and its exit is watched
through a pidfd in the event loop: no thread per task and no hand-over between
threads.  asyncio's own subprocess support is avoided: it is the slow path.
Each task runs in a session of its own, so a time limit or a cancel kills the
whole process group.  The runner lists each task's process group with a reaper
process (:mod:`hpcqueue.worker.reaper`), which kills them if the worker dies.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from hpcqueue.model import fill_placeholders, param_hash
from hpcqueue.worker.reaper import Reaper

log = logging.getLogger("hpcqueue.worker")

KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def _wait_unreaped(proc: subprocess.Popen) -> None:
    """Wait for `proc` to exit but leave it to be reaped (its pid stays taken) where the
    system can; else reap it."""
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except (AttributeError, ChildProcessError):
        proc.wait()


def _running(proc: subprocess.Popen) -> bool:
    """Whether `proc` still runs, without reaping it (that is for `_exited`) where the
    system can tell."""
    if proc.returncode is not None:
        return False
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False
    except AttributeError:
        return proc.poll() is None


class PreparedJob:
    __slots__ = ("id", "kind", "argv", "shell", "env", "cwd", "stdout", "stderr",
                 "time_limit", "cpus", "res", "submit_dir", "time_request")

    def __init__(self, job_id: int, d: dict, base_env: dict):
        self.id = job_id
        self.kind = d.get("kind")
        self.argv = list(d.get("cmd") or [])
        self.shell = bool(d.get("shell"))
        env = dict(base_env)
        env.update(d.get("env") or {})
        self.cpus = int(d.get("cpus") or 1)
        env["HPCQUEUE_JOB_ID"] = str(job_id)
        env["HPCQUEUE_CPUS"] = str(self.cpus)
        self.env = env
        self.submit_dir = d.get("submit_dir") or os.getcwd()
        self.cwd = d.get("cwd") or self.submit_dir
        self.stdout = d.get("stdout")
        self.stderr = d.get("stderr")
        self.time_limit = d.get("time_limit") or None
        self.res = dict(d.get("res") or {})
        self.time_request = d.get("time_request") or 0


class Runner:
    def __init__(self, loop, cpus: int, res: dict, report, executor: str = "process"):
        self.loop = loop
        self.cpus = cpus
        self.free_cpus = cpus
        self.res = dict(res)
        self.free_res = dict(res)
        self.report = report  # called in the loop thread with a result row
        self.noop = executor == "noop"
        self.jobs: dict[int, PreparedJob] = {}
        self.queue: deque = deque()
        self.running: dict[tuple, tuple] = {}  # (job, index) -> task
        self.procs: dict[tuple, subprocess.Popen] = {}
        self.timed_out: set[tuple] = set()
        self.pool = ThreadPoolExecutor(max_workers=max(1, cpus), thread_name_prefix="task")
        self.base_env = dict(os.environ)
        #: the id the server gave this worker at registration ($HPCQUEUE_WORKER_ID)
        self.worker_id: int | None = None
        self.deadline: float | None = None
        self.on_back = None  # called with tasks that no longer fit the time left
        self.idle_since = time.monotonic()
        self._dirs: set[str] = set()
        # kills the tasks' process groups if this worker dies
        self.reaper = None if self.noop else Reaper.start(log)

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.running)

    def add(self, defs: dict, tasks: list) -> None:
        for job_id, d in defs.items():
            self.jobs[int(job_id)] = PreparedJob(int(job_id), d, self.base_env)
        self.queue.extend(tasks)
        self.pump()

    def pump(self) -> None:
        """Start queued tasks, in order, while they fit: O(1) per task started."""
        queue, jobs = self.queue, self.jobs
        late = []
        blocked = []  # tasks whose other resources are busy: they keep their place
        while queue:
            task = queue[0]
            job = jobs[task[0]]
            if job.cpus > self.free_cpus:
                break
            if job.res and any(c > self.free_res.get(n, 0) for n, c in job.res.items()):
                blocked.append(queue.popleft())
                continue
            queue.popleft()
            if job.time_request and self.deadline is not None and \
                    self.deadline - time.time() < job.time_request:
                late.append(task)
                continue
            self._start(job, task)
        if self.reaper is not None:
            self.reaper.flush()
        if blocked:
            queue.extendleft(reversed(blocked))
        if late and self.on_back is not None:
            self.on_back(late)

    def _start(self, job: PreparedJob, task) -> None:
        key = (task[0], task[1])
        self.free_cpus -= job.cpus
        for n, c in job.res.items():
            self.free_res[n] -= c
        self.running[key] = task
        if self.noop:
            t = time.time()
            self.loop.call_soon(self._finished, key, job, (0, t, t, None))
            return
        t0 = time.time()
        proc, failure = self._spawn(job, task)
        if proc is None:
            code, msg = failure
            self.loop.call_soon(self._finished, key, job, (code, t0, time.time(), msg))
            return
        self.procs[key] = proc
        if self.reaper is not None:
            self.reaper.started(proc.pid)  # its process group: a session of its own
        timer = None
        if job.time_limit:
            timer = self.loop.call_later(job.time_limit, self._time_out, key, proc)
        self._watch(proc, lambda: self._exited(key, job, proc, t0, timer))

    def _watch(self, proc: subprocess.Popen, callback) -> None:
        """Call `callback` in the loop when `proc` exits: a pidfd in the event loop where
        the kernel has them (no thread per task), else a thread that waits."""
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            fd = None
        if fd is None:
            fut = self.pool.submit(_wait_unreaped, proc)
            fut.add_done_callback(lambda f: self.loop.call_soon_threadsafe(callback))
            return

        def ready():
            self.loop.remove_reader(fd)
            os.close(fd)
            callback()

        self.loop.add_reader(fd, ready)

    def _exited(self, key, job: PreparedJob, proc: subprocess.Popen, t0: float, timer) -> None:
        if self.reaper is not None:
            self.reaper.ended(proc.pid)  # before the reap frees the pid for reuse
        code = proc.wait()  # it has exited: this only reaps it
        if timer is not None:
            timer.cancel()
        if key in self.timed_out:
            self.timed_out.discard(key)
            msg = f"time limit of {job.time_limit:g}s exceeded"
        elif code < 0:
            msg = f"killed by signal {signal.Signals(-code).name}"
        else:
            msg = f"exit code {code}" if code else None
        self._finished(key, job, (code, t0, time.time(), msg))

    def _time_out(self, key, proc: subprocess.Popen) -> None:
        if _running(proc):
            self.timed_out.add(key)
            self._signal(proc, signal.SIGTERM)
            self.loop.call_later(KILL_GRACE, self._signal, proc, signal.SIGKILL)

    def _finished(self, key, job: PreparedJob, result) -> None:
        task = self.running.pop(key, None)
        self.procs.pop(key, None)
        self.free_cpus += job.cpus
        for n, c in job.res.items():
            self.free_res[n] += c
        if not self.running and not self.queue:
            self.idle_since = time.monotonic()
        if task is not None:
            code, t0, t1, msg = result
            self.report([task[0], task[1], task[3], code, t0, t1, msg])
        if self.queue:
            self.pump()

    def _open(self, spec, values: dict, cwd: str):
        if spec is None or spec == "none":
            return subprocess.DEVNULL
        if spec == "inherit":
            return None
        path = os.path.join(cwd, fill_placeholders(spec, values))
        parent = os.path.dirname(path)
        if parent not in self._dirs:
            os.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)
        return open(path, "wb")

    def _spawn(self, job: PreparedJob, task):
        """(process, None), or (None, (exit code, message)) if it could not start."""
        job_id, _, task_id, instance, entry = task
        values = {"JOB_ID": job_id, "TASK_ID": task_id, "INSTANCE_ID": instance,
                  "SUBMIT_DIR": job.submit_dir,
                  "HASH": lambda: param_hash(job.kind, job.argv, task_id, entry)}
        cwd = fill_placeholders(job.cwd, values)
        values["CWD"] = cwd
        env = job.env.copy()
        env["HPCQUEUE_TASK_ID"] = str(task_id)
        env["HPCQUEUE_INSTANCE_ID"] = str(instance)
        if self.worker_id is not None:
            env["HPCQUEUE_WORKER_ID"] = str(self.worker_id)
        if entry is not None:
            env["HPCQUEUE_ENTRY"] = entry
        if job.shell and not job.argv:
            argv = ["/bin/sh", "-c", entry or ""]
        else:
            argv = job.argv
        out = err = None
        try:
            out = self._open(job.stdout, values, cwd)
            err = self._open(job.stderr, values, cwd)
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err, start_new_session=True)
        except FileNotFoundError as e:
            if not os.path.isdir(cwd):
                return None, (127, f"working directory not found: {cwd}")
            if e.filename and e.filename != argv[0]:
                return None, (127, f"cannot open {e.filename}: no such directory")
            return None, (127, f"command not found: {argv[0]}")
        except PermissionError as e:
            return None, (126, f"permission denied: {e.filename or argv[0]}")
        except OSError as e:
            return None, (126, f"cannot start {argv[0]!r}: {e.strerror}")
        finally:
            for f in (out, err):
                if f is not None and f is not subprocess.DEVNULL:
                    f.close()
        return proc, None

    # ------------------------------------------------------------- control

    @staticmethod
    def _signal(proc: subprocess.Popen, sig) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self, keys) -> None:
        keys = {tuple(k) for k in keys}
        if keys:
            self.queue = deque(t for t in self.queue if (t[0], t[1]) not in keys)
        for key in keys:
            proc = self.procs.get(key)
            if proc is not None:
                self._signal(proc, signal.SIGTERM)
                self.loop.call_later(KILL_GRACE, self._signal, proc, signal.SIGKILL)

    def kill_all(self) -> None:
        self.queue.clear()
        self.kill(list(self.running))

    def shutdown(self) -> None:
        self.kill_all()
        for proc in list(self.procs.values()):
            self._signal(proc, signal.SIGKILL)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None
