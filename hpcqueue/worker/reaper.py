"""The reaper: a watchdog process that kills a worker's tasks when the worker dies.

Each task runs in a session of its own (so that a time limit kills its whole process
group), which also means that nothing kills it when its worker is killed with
``kill -9``.  The server would then run the task again while the old instance still
runs.  So a worker starts one reaper, ``python -m hpcqueue.worker.reaper``, in a session
of its own (signals meant for the worker's process group do not reach it), with a pipe
on its stdin.  The worker writes one fixed-size *record* per event: the process group
id of a task it started (positive) or of a task whose leader has exited (negative).  It
writes the exit *before* it reaps the leader, so a listed group id can never have been
reused by another process while the worker lives.  When the pipe ends, however the
worker ended, the reaper sends SIGKILL to every group still listed and exits.

This module holds both ends.  The reaper's end imports only the standard library, so it
starts quickly; the worker's end (:class:`Reaper`) imports ``subprocess`` only when it
starts one.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time

RECORD = struct.Struct("=i")  # > 0: a task's process group started; < 0: its leader ended
PACE = 0.05  # seconds the reaper sleeps after each read, so a busy worker wakes it rarely
CLOSE_WAIT = 2.0  # seconds a worker waits for its reaper to exit after closing the pipe


def apply(groups: set, data: bytes) -> bytes:
    """Apply the whole records in `data` to `groups`; return the bytes of a partial one."""
    whole = len(data) - len(data) % RECORD.size
    for (value,) in RECORD.iter_unpack(data[:whole]):
        if value > 0:
            groups.add(value)
        else:
            groups.discard(-value)
    return data[whole:]


def kill_groups(groups) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:  # gone already, or no longer ours
            pass


def main() -> int:
    """The reaper process: follow the records on stdin; at its end, kill what is listed."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)  # the end of the pipe is the only signal
    os.chdir("/")  # keep no file system busy
    groups: set = set()
    rest = b""
    while True:
        try:
            chunk = os.read(0, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        rest = apply(groups, rest + chunk)
        # records wait in the pipe while it sleeps: they are safe there, and a worker
        # running thousands of tasks a second costs it a few wake-ups a second
        time.sleep(PACE)
    kill_groups(groups)
    return 0


class Reaper:
    """The worker's end: the pipe to its reaper process.

    :meth:`started` and :meth:`ended` write their record at once, from any thread: the
    spawner's thread lists a group as soon as its leader exists (before the loop hears of
    the task), and the loop unlists it before it reaps the leader.  One record is one
    write, far below PIPE_BUF, so records from different threads never interleave.
    If the reaper cannot be started or has died, the methods do nothing (one warning is
    logged): the worker runs on, without the guard.
    """

    def __init__(self, proc, fd: int, log):
        self.proc = proc
        self.fd: int | None = fd
        self.log = log

    @classmethod
    def start(cls, log) -> Reaper | None:
        import subprocess

        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hpcqueue.worker.reaper"], stdin=read_end,
                stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            os.close(write_end)
            log.warning("cannot start the task reaper (%s): the tasks of this worker will "
                        "outlive it if it is killed", e)
            return None
        finally:
            os.close(read_end)
        return cls(proc, write_end, log)

    def started(self, pgid: int) -> None:
        self._write(RECORD.pack(pgid))

    def ended(self, pgid: int) -> None:
        self._write(RECORD.pack(-pgid))

    def _write(self, data: bytes) -> None:
        fd = self.fd
        if fd is None:
            return
        try:
            while data:  # a blocking pipe takes it all at once; the loop is for safety
                data = data[os.write(fd, data):]
        except OSError as e:
            self.log.warning("the task reaper has gone (%s): the tasks of this worker will "
                             "outlive it if it is killed", e)
            self._close_fd()

    def _close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """End the pipe (the reaper kills what is still listed) and wait for the reaper."""
        import subprocess

        self._close_fd()
        try:
            self.proc.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
