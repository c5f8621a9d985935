"""Out of memory: make the kernel's OOM killer pick a task rather than its worker, and tell
when it did.

A worker killed by the OOM killer takes all its tasks with it, and the server cannot tell
which of them used the memory: each is charged a crash.  So each task starts with a higher
``oom_score_adj`` than its worker (raising it needs no privilege): the task that runs the
node out of memory is the one killed, the worker lives on and reports that task alone as
failed, naming the OOM killer when the cgroup's ``memory.events`` counted a kill.  Linux only;
elsewhere these do nothing.
"""

from __future__ import annotations

import os

TASK_OOM_BONUS = 500  # added to a task's oom_score_adj (the kernel's range is -1000..1000)


def task_score() -> bytes | None:
    """The oom_score_adj to give this worker's tasks (its own plus the bonus), or None where
    it cannot be read.  Read once: a worker's own score does not change."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            own = int(f.read())
    except (OSError, ValueError):
        return None
    return str(min(1000, own + TASK_OOM_BONUS)).encode()


def prefer_task(pid: int, score: bytes | None = None) -> None:
    """Make the OOM killer pick process PID (a task just started) before its worker: give it
    SCORE (from :func:`task_score`, read here if not given).  What the task forks
    afterwards inherits it."""
    if score is None:
        score = task_score()
        if score is None:
            return
    try:
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, score)
    except OSError:
        pass
    finally:
        os.close(fd)


def _events_path() -> str | None:
    """memory.events of this process's cgroup (v2), or None."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    path = "/sys/fs/cgroup" + line[3:].strip() + "/memory.events"
                    return path if os.path.exists(path) else None
    except OSError:
        pass
    return None


class OomWatch:
    """Whether the OOM killer killed something in this worker's cgroup since last asked."""

    def __init__(self) -> None:
        self.path = _events_path()
        self.seen = self._kills()

    def _kills(self) -> int | None:
        if self.path is None:
            return None
        try:
            with open(self.path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            return None
        return None

    def killed(self) -> bool:
        """True if the OOM killer struck since the last call (or since the start)."""
        now = self._kills()
        if now is None or self.seen is None:
            self.seen = now
            return False
        struck, self.seen = now > self.seen, now
        return struck
