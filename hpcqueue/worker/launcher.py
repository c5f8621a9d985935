"""Starting tasks off the worker's event loop.

The loop prepares each task (:class:`Launch`) and hands it to a :class:`Launcher`: threads
that run a :class:`Starter` on it (open its files, start it with the C library's
``posix_spawn`` or ``subprocess.Popen``, list its process group with the reaper, raise its
OOM score) and hand the process back to the loop.  The loop never waits for an exec or a
file system (``benchmarks/spawn.py`` measures the ways to start a task).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import subprocess
import threading
from collections import deque

from hpcqueue.worker import oom

log = logging.getLogger("hpcqueue.worker")

LAUNCH_THREADS = 2  # threads starting tasks (benchmarks/spawn.py: 2 beat 1 at 2 cpus)
OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # as open(path, "wb")


class Child:
    """A process started by posix_spawn: the part of ``subprocess.Popen`` the runner uses."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class Launch:
    """What a launching thread needs to start one task.  stdin, stdout, stderr: an fd (the
    runner's /dev/null, a pipe's write end), a path to open, or None (the worker's own)."""

    __slots__ = ("key", "argv", "exe", "env", "cwd", "stdin", "stdout", "stderr", "pipes")

    def __init__(self, key, argv, exe, env, cwd, stdin, stdout, stderr, pipes):
        self.key = key
        self.argv = argv
        self.exe = exe  # the executable's path for posix_spawn (None: Popen searches)
        self.env = env  # a dict for Popen, a list of b"NAME=value" for posix_spawn
        self.cwd = cwd
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.pipes = pipes  # write ends to close once the task has them (or None)


class Launcher:
    """Threads that start tasks: :meth:`submit` takes a Launch from the loop; each result,
    ``(launch, process, failure)``, comes back to ``on_result`` in the loop, the loop woken
    once for the results waiting rather than once per task (no Future per task)."""

    def __init__(self, loop, start, on_result, threads: int = LAUNCH_THREADS):
        self.loop = loop
        self.start = start  # in a thread: Launch -> (process, None) or (None, failure)
        self.on_result = on_result
        self.calls: queue.SimpleQueue = queue.SimpleQueue()
        self.results: deque = deque()
        self.threads = [threading.Thread(target=self._run, name=f"launch-{k}", daemon=True)
                        for k in range(threads)]
        for t in self.threads:
            t.start()

    def submit(self, launch: Launch) -> None:
        self.calls.put(launch)

    def _run(self) -> None:
        while True:
            launch = self.calls.get()
            if launch is None:
                return
            try:
                proc, failure = self.start(launch)
            except Exception as e:  # a bug: the task fails rather than being lost
                log.exception("cannot start task %s", launch.key)
                proc, failure = None, (126, f"cannot start {launch.argv[0]!r}: {e}")
            wake = not self.results
            self.results.append((launch, proc, failure))
            if wake:
                try:
                    self.loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop has closed: shutdown() takes the rest
                    pass

    def _drain(self) -> None:
        results = self.results
        while results:
            self.on_result(*results.popleft())

    def shutdown(self) -> list:
        """Stop the threads once the calls already taken are done; the results that the
        loop has not taken (their processes may run)."""
        while True:
            try:
                self.calls.get_nowait()  # not started: dropped
            except queue.Empty:
                break
        for _ in self.threads:
            self.calls.put(None)
        for t in self.threads:
            t.join()
        left = list(self.results)
        self.results.clear()
        return left


class Starter:
    """What a launching thread does with a :class:`Launch`: ``starter(launch)`` is
    (process, None) or (None, (exit code, message)).  SPAWNER: posix_spawn through the C
    library (:mod:`hpcqueue.worker.spawn`), or None for Popen; REAPER lists each task's
    process group; OOM_SCORE is the tasks' OOM score (None: left alone).  The output
    folders made (or found) are remembered: each is made once, not once per task."""

    def __init__(self, spawner, reaper, oom_score):
        self.spawner = spawner
        self.reaper = reaper
        self.oom_score = oom_score
        self._dirs: set[str] = set()
        self._lock = threading.Lock()

    def open_output(self, path: str) -> int:
        """In a launching thread: open an output file, making its folder the first time."""
        parent = os.path.dirname(path)
        if parent not in self._dirs:
            with self._lock:  # the other thread may be making it for the same job
                if parent not in self._dirs:
                    os.makedirs(parent, exist_ok=True)
                    self._dirs.add(parent)
        try:
            return os.open(path, OPEN_FLAGS, 0o666)
        except FileNotFoundError:  # its folder was removed since: make it again
            os.makedirs(parent, exist_ok=True)
            return os.open(path, OPEN_FLAGS, 0o666)

    def __call__(self, launch: Launch):
        """In a launching thread: open the task's files, start it, list its group with the
        reaper and raise its OOM score.  (process, None) or (None, (exit code, message))."""
        argv, cwd = launch.argv, launch.cwd
        opened = []
        try:
            if not os.path.isdir(cwd):  # before the output files: they must not create it
                why = "not a directory" if os.path.exists(cwd) else "no such directory"
                return None, (127, f"working directory {cwd}: {why}")
            fds = []
            for k, spec in enumerate((launch.stdin, launch.stdout, launch.stderr)):
                if isinstance(spec, str):
                    try:
                        fd = os.open(spec, os.O_RDONLY | os.O_CLOEXEC) if k == 0 \
                            else self.open_output(spec)
                    except FileNotFoundError:
                        return None, (127, f"cannot open {spec}: no such directory")
                    except PermissionError:
                        return None, (126, f"permission denied: {spec}")
                    except OSError as e:
                        return None, (126, f"cannot open {spec}: {e.strerror}")
                    opened.append(fd)
                    fds.append(fd)
                else:
                    fds.append(spec)
            if self.spawner is not None:
                proc = self._posix_spawn(launch, fds)
            else:
                proc = subprocess.Popen(argv, cwd=cwd, env=launch.env, stdin=fds[0],
                                        stdout=fds[1], stderr=fds[2],
                                        start_new_session=True)
        except FileNotFoundError:
            if not os.path.isdir(cwd):
                return None, (127, f"working directory not found: {cwd}")
            return None, (127, f"command not found: {argv[0]}")
        except PermissionError:
            return None, (126, f"permission denied: {argv[0]}")
        except OSError as e:
            return None, (126, f"cannot start {argv[0]!r}: {e.strerror}")
        finally:
            for fd in opened:
                os.close(fd)
            if launch.pipes is not None:
                for fd in launch.pipes[1]:
                    os.close(fd)  # a pipe's write end: the task has its own now
        if self.reaper is not None:
            self.reaper.started(proc.pid)  # its process group: a session of its own
        if self.oom_score is not None:
            oom.prefer_task(proc.pid, self.oom_score)
        return proc, None

    def _posix_spawn(self, launch: Launch, fds: list) -> Child:
        from hpcqueue.worker.spawn import SpawnError

        try:
            pid = self.spawner.spawn(os.fsencode(launch.exe),
                                     [os.fsencode(a) for a in launch.argv], launch.env,
                                     os.fsencode(launch.cwd), fds)
        except SpawnError as e:
            if e.errno == errno.ENOENT:
                raise FileNotFoundError(e.errno, e.strerror) from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise PermissionError(e.errno, e.strerror) from None
            raise
        return Child(pid)
