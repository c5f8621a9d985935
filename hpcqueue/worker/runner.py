"""Running tasks as subprocesses, as many at once as the worker's resources allow.

The event loop prepares each task (its command, environment and output paths) and hands it
to a :class:`Launcher`: two threads that open its output files, start it and hand the
process back.  The loop never waits for an exec or for a file system: a thread calls the C
library's ``posix_spawn`` (:mod:`hpcqueue.worker.spawn`; ``subprocess.Popen`` where the C
library lacks what it needs), which releases the GIL while the kernel execs the child.
Measured against the other ways in ``benchmarks/spawn.py``.  The task's exit is watched
through a pidfd in the event loop: no thread per task.  asyncio's own subprocess support
is avoided: it is the slow path.  Each task runs in a session of its own, so a time limit
or a cancel kills the whole process group.  The launching thread lists each task's process
group with a reaper process (:mod:`hpcqueue.worker.reaper`) as soon as it exists, and the
reaper kills the listed groups if the worker dies.

Output costs little: /dev/null is opened once, a task's output files are opened by the
launching thread, and their folders are made once (the folders made are remembered).

A job submitted with ``--stream DIR`` gets pipes instead of files: the loop reads them as
they become readable and appends the chunks to the job's log on this worker
(:mod:`hpcqueue.streamlog`); when the task exits, what is left in its pipes is read and
its end is written, exit code and all.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from hpcqueue import calls
from hpcqueue.model import fill_placeholders, param_hash
from hpcqueue.worker import oom
from hpcqueue.worker.launcher import Launch, Launcher, Starter
from hpcqueue.worker.reaper import Reaper
from hpcqueue.worker.resources import IndexPool, set_task_env

log = logging.getLogger("hpcqueue.worker")

KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
MAX_OPEN_LOGS = 32  # streamed jobs' logs kept open; idle ones are closed beyond that
STREAM_CHUNK = 1 << 16  # bytes read from a streamed task's pipe at once
DRAIN_READS = 64  # reads of a task's pipe after it exited (a child it left may still write)
#: variables each task gets a value of its own for: left out of a job's cached environment
PER_TASK_VARIABLES = frozenset({"HPCQUEUE_TASK_ID", "HPCQUEUE_INSTANCE_ID",
                                "HPCQUEUE_WORKER_ID", "HPCQUEUE_ENTRY", "HPCQUEUE_TASK_DIR"})


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
                 "time_limit", "cpus", "res", "submit_dir", "time_request", "stream",
                 "function", "function_path", "stdin", "stdin_path", "task_dir",
                 "envb", "exe")

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
        self.stream = d.get("stream") or None  # a dir: output goes to logs there
        #: a function job's callable (base64, hpcqueue.calls), and the file it is written to
        #: on this worker when its first task starts
        self.function = d.get("function") if self.kind == calls.KIND else None
        self.function_path: str | None = None
        #: --stdin: its bytes, and the file they are written to on this worker when the
        #: job's first task starts; --task-dir: "remove" or "keep-on-fail" (or None)
        self.stdin: bytes | None = d.get("stdin")
        self.stdin_path: str | None = None
        self.task_dir: str | None = d.get("task_dir")
        #: for posix_spawn, made for the first task: the environment as b"NAME=value"
        #: (without PER_TASK_VARIABLES), and the command's path when PATH holds only full
        #: paths (else it is looked up for each task, in its working directory)
        self.envb: list[bytes] | None = None
        self.exe: str | None = None


class Runner:
    def __init__(self, loop, cpus: int, res: dict, report, executor: str = "process",
                 indices: dict | None = None, gpu_vendor: str = "nvidia"):
        self.loop = loop
        self.cpus = cpus
        self.free_cpus = cpus
        self.res = dict(res)
        self.free_res = dict(res)
        #: the free indices of indexed resources (gpus=[0,1]), and the indices each running
        #: task holds: (job, index) -> {name: [indices]}
        self.indices = IndexPool(indices or {})
        self.held: dict[tuple, dict] = {}
        self.gpu_vendor = gpu_vendor
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
        self.started = int(time.time())  # names this worker's stream logs
        self.logs: dict = {}  # job -> its stream log on this worker (streamlog.LogWriter)
        # a streamed task's pipes: (job, index) -> [stdout fd, stderr fd, first offset, log,
        # task id, instance]; a closed pipe's fd is -1
        self.pipes: dict[tuple, list] = {}
        # kills the tasks' process groups if this worker dies
        self.reaper = None if self.noop else Reaper.start(log)
        #: tells when the OOM killer struck (tasks are its first pick: oom.prefer_task,
        #: with the score read once)
        self.oom = None if self.noop else oom.OomWatch()
        self.oom_score = None if self.noop else oom.task_score()
        #: /dev/null, opened once; posix_spawn through the C library (None: Popen); the
        #: threads that start tasks; the tasks being started (in self.starts) that were
        #: cancelled meanwhile
        self.devnull = -1
        self.starter: Starter | None = None
        self.launcher: Launcher | None = None
        self.cancelled: set[tuple] = set()
        if not self.noop:
            from hpcqueue.worker.spawn import spawner

            self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            self.starter = Starter(spawner(), self.reaper, self.oom_score)
            self.launcher = Launcher(loop, self.starter, self._launched)
        #: function tasks (hpcqueue.calls): results over this many bytes go to a file; the
        #: server dir, under which they go when the job keeps no stdout; the files of
        #: running calls, (job, index) -> (args path, outcome path, stdout path or None);
        #: and the folder of those files (made for the first call)
        self.result_limit = calls.DEFAULT_RESULT_LIMIT
        self.server_dir: str | None = None
        self.calls: dict[tuple, tuple] = {}
        self.calls_dir: str | None = None
        #: --task-dir: the folder of each running task that has one; and the folder of
        #: this worker's --stdin files (made for the first)
        self.task_dirs: dict[tuple, str] = {}
        self.stdin_dir: str | None = None
        #: the tasks handed to the launcher: (job, index) -> (job, task, start time, log)
        self.starts: dict[tuple, tuple] = {}

    @property
    def spawner(self):
        """posix_spawn through the C library (hpcqueue.worker.spawn), or None: Popen."""
        return self.starter.spawner if self.starter is not None else None

    @spawner.setter
    def spawner(self, value) -> None:
        if self.starter is not None:
            self.starter.spawner = value

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
        if blocked:
            queue.extendleft(reversed(blocked))
        if late and self.on_back is not None:
            self.on_back(late)

    def _start(self, job: PreparedJob, task) -> None:
        key = (task[0], task[1])
        self.free_cpus -= job.cpus
        for n, c in job.res.items():
            self.free_res[n] -= c
        held = self.indices.take(job.res) if job.res else None
        if held is not None:
            self.held[key] = held
        self.running[key] = task
        if self.noop:
            t = time.time()
            self.loop.call_soon(self._finished, key, job, (0, t, t, None))
            return
        t0 = time.time()
        log_ = None
        if job.stream is not None:
            try:
                log_ = self._log(job)
            except OSError as e:
                msg = f"cannot write the stream log in {job.stream}/job-{job.id}: " \
                      f"{e.strerror}"
                self.loop.call_soon(self._finished, key, job, (126, t0, time.time(), msg))
                return
        launch, failure = self._prepare(job, task, log_ is not None)
        if launch is None:
            code, msg = failure
            self.loop.call_soon(self._finished, key, job, (code, t0, time.time(), msg))
            return
        self.starts[key] = (job, task, t0, log_)
        self.launcher.submit(launch)

    def _launched(self, launch: Launch, proc, failure) -> None:
        """In the loop: a launching thread has started the task (PROC) or could not
        (FAILURE: exit code and message)."""
        key = launch.key
        cancelled = key in self.cancelled
        self.cancelled.discard(key)
        job, task, t0, log_ = self.starts.pop(key)
        reads = launch.pipes[0] if launch.pipes else None
        if proc is None:
            self._not_started(key, reads)
            code, msg = failure
            self._finished(key, job, (code, t0, time.time(), msg))
            return
        self.procs[key] = proc
        if reads is not None:
            self.pipes[key] = [reads[0], reads[1], log_.offset, log_, task[2], task[3]]
            self.loop.add_reader(reads[0], self._readable, key, 0, 1)  # streamlog.STDOUT
            self.loop.add_reader(reads[1], self._readable, key, 1, 2)  # streamlog.STDERR
        if cancelled:
            self._signal(proc, signal.SIGTERM)
            self.loop.call_later(KILL_GRACE, self._signal, proc, signal.SIGKILL)
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
            if code == -signal.SIGKILL and self.oom is not None and self.oom.killed():
                msg += " (out of memory: the kernel's OOM killer)"
        else:
            msg = f"exit code {code}" if code else None
        pipes = self.pipes.pop(key, None)
        if pipes is not None:
            self._end_stream(key, pipes, code)
        out = None
        if key in self.calls:
            out, why = self._outcome(key, job, self.calls.pop(key))
            msg = why or msg
        if self.task_dirs:
            msg = self._end_task_dir(key, job, code, msg)
        self._finished(key, job, (code, t0, time.time(), msg, out))

    # ------------------------------------------------------------- --task-dir, --stdin

    def _end_task_dir(self, key, job: PreparedJob, code: int, msg: str | None):
        """Remove the task's folder (in a thread: it may be big), or keep it if the task
        failed and its job says so; the message, which names a kept folder."""
        path = self.task_dirs.pop(key, None)
        if path is None:
            return msg
        if code != 0 and job.task_dir == "keep-on-fail":
            return f"{msg or f'exit code {code}'}; its task dir is kept: {path}"
        import shutil

        try:
            self.pool.submit(shutil.rmtree, path, True)
        except RuntimeError:  # the worker is shutting down
            shutil.rmtree(path, ignore_errors=True)
        return msg

    def _make_task_dir(self, key, job_id: int, task_id: int) -> str:
        """A new empty folder for the task ($HPCQUEUE_TASK_DIR), in the worker's TMPDIR."""
        import tempfile

        path = tempfile.mkdtemp(prefix=f"hpcqueue-task-{job_id}-{task_id}-")
        self.task_dirs[key] = path
        return path

    def _stdin_file(self, job: PreparedJob) -> str:
        """The file holding the job's --stdin on this worker, written once."""
        if job.stdin_path is None:
            if self.stdin_dir is None:
                import tempfile

                self.stdin_dir = tempfile.mkdtemp(prefix="hpcqueue-stdin-")
            path = os.path.join(self.stdin_dir, f"job-{job.id}")
            with open(path, "wb") as f:
                f.write(job.stdin or b"")
            job.stdin_path = path
        return job.stdin_path

    # ------------------------------------------------------------- Python calls

    def _call_argv(self, job: PreparedJob, key, task_id: int, entry: str | None,
                   stdout: str | None) -> list[str]:
        """Write a call's payload for `hpcqueue.worker.callrun`; its argv.  OSError if the
        files cannot be written."""
        if self.calls_dir is None:
            import tempfile

            self.calls_dir = tempfile.mkdtemp(prefix="hpcqueue-calls-")
        if job.function_path is None:
            path = os.path.join(self.calls_dir, f"job-{job.id}.fn")
            with open(path, "wb") as f:
                f.write(calls.decode(job.function or ""))
            job.function_path = path
        base = os.path.join(self.calls_dir, f"{key[0]}-{key[1]}")
        with open(base + ".in", "wb") as f:
            f.write(calls.decode(entry or ""))
        self.calls[key] = (base + ".in", base + ".out", stdout)
        return [sys.executable, "-m", "hpcqueue.worker.callrun", job.function_path,
                base + ".in", base + ".out"]

    def _outcome(self, key, job: PreparedJob, files: tuple):
        """(result, error line or None) of a call that ended: its outcome's bytes, or the
        path of the file they were written to when over the result limit; (None, None) when
        it wrote none (killed, or it could not start)."""
        args_path, out_path, stdout = files
        try:
            os.unlink(args_path)
        except OSError:
            pass
        try:
            with open(out_path, "rb") as f:
                data = f.read()
            os.unlink(out_path)
        except OSError:
            return None, None
        why = calls.failure_line(data)
        if len(data) <= self.result_limit:
            return data, why
        task_id = self.running[key][2]
        path = calls.result_path(job.id, task_id, stdout, job.stream,
                                 self.server_dir or os.getcwd())
        try:
            calls.write_result(path, data)
        except OSError as e:  # the server writes it to a file of its own instead
            log.warning("job %s task %s: cannot write its result to %s (%s): sending it to "
                        "the server", job.id, task_id, path, e.strerror)
            return data, why
        return path, why

    # ------------------------------------------------------------- streamed output

    def _log(self, job: PreparedJob):
        """The job's stream log on this worker (a streamlog.LogWriter), opened if need be."""
        log_ = self.logs.get(job.id)
        if log_ is None:
            # imported here: a worker that runs no streamed job does not pay for it
            from hpcqueue.streamlog import LogWriter, job_dir

            if len(self.logs) >= MAX_OPEN_LOGS:
                busy = {k[0] for k in self.pipes} | {k[0] for k in self.starts}
                for jid in [j for j in self.logs if j not in busy]:
                    self.logs.pop(jid).close()
            name = f"{self.worker_id or 0}-{self.started}"
            log_ = self.logs[job.id] = LogWriter(job_dir(job.stream, job.id), name)
        return log_

    def _readable(self, key, k: int, stream: int) -> None:
        pipes = self.pipes.get(key)
        if pipes is None or pipes[k] < 0:
            return
        try:
            data = os.read(pipes[k], STREAM_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._append(key, pipes, stream, data)
        else:
            self.loop.remove_reader(pipes[k])
            os.close(pipes[k])
            pipes[k] = -1

    def _append(self, key, pipes: list, stream: int, data: bytes) -> None:
        try:
            pipes[3].chunk(key[0], pipes[4], pipes[5], stream, data)
        except OSError as e:
            log.error("job %s task %s: cannot write to %s: %s", key[0], pipes[4],
                      pipes[3].path, e.strerror)

    def _end_stream(self, key, pipes: list, code: int) -> None:
        """The task has exited: read what is left in its pipes, close them, write its end."""
        for k, stream in ((0, 1), (1, 2)):  # streamlog.STDOUT, STDERR
            fd = pipes[k]
            if fd < 0:
                continue
            for _ in range(DRAIN_READS):
                try:
                    data = os.read(fd, STREAM_CHUNK)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self._append(key, pipes, stream, data)
            self.loop.remove_reader(fd)
            os.close(fd)
            pipes[k] = -1
        try:
            pipes[3].end(key[0], pipes[4], pipes[5], code, pipes[2])
        except OSError as e:
            log.error("job %s task %s: cannot write to %s: %s", key[0], pipes[4],
                      pipes[3].path, e.strerror)

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
        if self.held:
            self.indices.give(self.held.pop(key, None))
        if not self.running and not self.queue:
            self.idle_since = time.monotonic()
        if task is not None:
            code, t0, t1, msg = result[:4]
            row = [task[0], task[1], task[3], code, t0, t1, msg]
            if len(result) > 4 and result[4] is not None:
                row.append(result[4])  # a call's result: the agent sends it apart (`o`)
            self.report(row)
        if self.queue:
            self.pump()

    # ------------------------------------------------------------- starting a task

    def _output(self, spec, values: dict, cwd: str):
        """Where an output goes: /dev/null's fd, None (the worker's own), or a path."""
        if spec is None or spec == "none":
            return self.devnull
        if spec == "inherit":
            return None
        return os.path.join(cwd, fill_placeholders(spec, values))

    def _task_env(self, job: PreparedJob, extra: dict, held):
        """The task's environment: a dict for Popen, b"NAME=value" items for posix_spawn."""
        if self.spawner is None or held is not None:
            env = job.env.copy()
            env.update(extra)
            if held is not None:
                set_task_env(env, held, self.gpu_vendor)
            if self.spawner is None:
                return env
            return [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
        if job.envb is None:
            job.envb = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in job.env.items()
                        if k not in PER_TASK_VARIABLES]
        return job.envb + [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in extra.items()]

    def _executable(self, job: PreparedJob, argv: list[str], cwd: str) -> str | None:
        """The path posix_spawn runs for ARGV, found as Popen would (the task's PATH, a
        relative folder taken from CWD); None if there is none.  Kept for the job when
        that cannot depend on the working directory."""
        cmd = argv[0]
        if "/" in cmd:
            return cmd  # relative to the task's working directory, as with Popen
        if job.exe is not None and argv is job.argv:
            return job.exe
        dirs = os.get_exec_path(job.env)
        for d in dirs:
            path = os.path.join(cwd, d or ".", cmd)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                if argv is job.argv and all(os.path.isabs(x) for x in dirs):
                    job.exe = path
                return path
        return None

    def _prepare(self, job: PreparedJob, task, piped: bool = False):
        """In the loop: (a Launch for a launching thread, None), or (None, (exit code,
        message)) if the task cannot start.  PIPED: its stdout and stderr are pipes."""
        job_id, _, task_id, instance, entry = task
        values = {"JOB_ID": job_id, "TASK_ID": task_id, "INSTANCE_ID": instance,
                  "SUBMIT_DIR": job.submit_dir,
                  "HASH": lambda: param_hash(job.kind, job.argv, task_id, entry)}
        cwd = fill_placeholders(job.cwd, values)
        values["CWD"] = cwd
        extra = {"HPCQUEUE_TASK_ID": str(task_id), "HPCQUEUE_INSTANCE_ID": str(instance)}
        if self.worker_id is not None:
            extra["HPCQUEUE_WORKER_ID"] = str(self.worker_id)
        if entry is not None and job.function is None:  # (a call's arguments: a file)
            extra["HPCQUEUE_ENTRY"] = entry
        if job.shell and not job.argv:
            argv = ["/bin/sh", "-c", entry or ""]
        else:
            argv = job.argv
        key = (job_id, task[1])
        if any("\0" in a for a in argv) or (entry and "\0" in entry):
            return None, (126, "cannot start the task: its command or entry holds a NUL "
                               "character")
        if job.function is not None:
            stdout = None
            if not piped and job.stdout not in (None, "none", "inherit"):
                stdout = os.path.join(cwd, fill_placeholders(job.stdout, values))
            try:
                argv = self._call_argv(job, key, task_id, entry, stdout)
            except (OSError, ValueError) as e:
                why = getattr(e, "strerror", None) or str(e)
                return None, (126, f"cannot write the call's payload in {self.calls_dir}: "
                                   f"{why}")
        exe = None
        if self.spawner is not None:
            exe = self._executable(job, argv, cwd)
            if exe is None:
                self._not_started(key, None)
                return None, (127, f"command not found: {argv[0]}")
        pipes = None
        try:
            if job.task_dir:
                extra["HPCQUEUE_TASK_DIR"] = self._make_task_dir(key, job_id, task_id)
            stdin = self._stdin_file(job) if job.stdin is not None else self.devnull
            if piped:
                out_r, out = os.pipe()
                try:
                    err_r, err = os.pipe()
                except OSError:
                    os.close(out_r)
                    os.close(out)
                    raise
                os.set_blocking(out_r, False)
                os.set_blocking(err_r, False)
                pipes = ((out_r, err_r), (out, err))
            else:
                out = self._output(job.stdout, values, cwd)
                err = self._output(job.stderr, values, cwd)
        except OSError as e:
            self._not_started(key, None)
            return None, (126, f"cannot start {argv[0]!r}: {e.strerror}")
        env = self._task_env(job, extra, self.held.get(key))
        return Launch(key, argv, exe, env, cwd, stdin, out, err, pipes), None

    def _not_started(self, key, reads) -> None:
        """Undo what was made for a task that did not start."""
        for fd in reads or ():
            os.close(fd)
        if key in self.task_dirs:
            import shutil

            shutil.rmtree(self.task_dirs.pop(key), ignore_errors=True)
        files = self.calls.pop(key, None)
        if files is not None:
            for path in files[:2]:
                try:
                    os.unlink(path)
                except OSError:
                    pass

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
            elif key in self.starts:
                self.cancelled.add(key)  # signalled once it has started

    def kill_all(self) -> None:
        self.queue.clear()
        self.kill(list(self.running))

    def shutdown(self) -> None:
        self.kill_all()
        if self.launcher is not None:
            # tasks being started finish starting (their groups are listed with the
            # reaper by then); those the loop has not taken are killed here
            for _, proc, _ in self.launcher.shutdown():
                if proc is not None:
                    self._signal(proc, signal.SIGKILL)
            self.launcher = None
        for proc in list(self.procs.values()):
            self._signal(proc, signal.SIGKILL)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.devnull >= 0:
            os.close(self.devnull)
            self.devnull = -1
        for pipes in self.pipes.values():
            for fd in pipes[:2]:
                if fd >= 0:
                    self.loop.remove_reader(fd)
                    os.close(fd)
        self.pipes.clear()
        for log_ in self.logs.values():
            log_.close()
        self.logs.clear()
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None
        import shutil

        for path in [self.calls_dir, self.stdin_dir, *self.task_dirs.values()]:
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        self.calls_dir = self.stdin_dir = None
        self.task_dirs.clear()
