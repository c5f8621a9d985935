"""A job and its tasks, stored compactly.

A job's tasks live in columns (one byte of state, one start counter, ... per
task), allocated the first time one of its tasks starts.  Until then a job of a
million tasks is its id ranges and a cursor: "waiting" is every index at or
past the cursor, plus the few indexes sent back to the queue (retries, tasks of
lost workers).  Every operation here is O(1) per task it touches.

A retry with ``--retry-delay`` is *delayed*: its task is waiting (it counts in
``counts[WAITING]``, and keeps its job from being done) but it is in
``retry_at`` (index -> the server time it may run again), not in the queue,
until a ``due`` event moves it there (see :mod:`hpcqueue.state`).

The columns are fixed-width, and the bounds below are what they hold.  The
server checks values from the network against them before they become events
(an event that does not fit would stop every later restart), and the few
counters that grow here (starts, retries, crashes) stop at their bound.

An *open* job (submitted with ``"open": true``, by `submit --each-line -` reading a pipe)
takes more tasks later: :meth:`Job.append` adds entries with the next ids (an open job's ids
are always 0 .. n-1) and grows the columns in place.  It is never done while open, even with
no task waiting; closing it (or canceling it) ends that.

Dependencies (see :mod:`hpcqueue.deps`): a job that waits for other jobs holds their ids in
``waiting_on`` (the state removes each as it ends) and offers no task until it is empty.  A
job with ``task_deps`` keeps, per waiting task, how many of the tasks it waits for have not
finished (``unmet``), and per task the tasks that wait for it (``dependants``): a task that
finishes counts its dependants down, and one that reaches 0 goes into the queue; one that
fails for good cancels its dependants, and theirs, with the reason.  Such a job hands out
tasks from its queue only (its cursor is at the end from the start), and a task in
``unmet`` is waiting but never in the queue.
"""

from __future__ import annotations

from array import array
from collections import deque

from hpcqueue.model import (
    CANCELED,
    FAILED,
    FINISHED,
    RUNNING,
    STATE_CODES,
    WAITING,
    IdRanges,
    JobState,
    retry_delay,
)

#: what the per-task columns hold
MAX_RETRIES = 255  # retries: one byte
MAX_CRASH_LIMIT = 255  # crashes: one byte, and the count stops at 255
MAX_STARTS = 0xFFFF  # starts: two bytes; a task started this often fails
EXIT_MIN, EXIT_MAX = -(2**31), 2**31 - 1  # exit: a C int


class Job:
    __slots__ = (
        "id", "spec", "ids", "entries", "n", "cursor", "requeued", "counts",
        "state", "starts", "crashes", "retries", "exit", "worker", "t0", "t1",
        "errors", "canceled", "submitted", "ended", "cpus", "res", "priority",
        "time_request", "mean_runtime", "crash_limit", "max_retries", "open",
        "retry_delay", "retry_timeout", "retry_at", "failed_since", "results",
        "waiting_on", "unmet", "deps", "dependants", "reason",
    )

    def __init__(self, job_id: int, spec: dict, submitted: float):
        self.id = job_id
        self.spec = spec
        self.ids = IdRanges(spec["ids"])
        self.entries = spec.get("entries")
        self.n = len(self.ids)
        self.cursor = 0
        self.requeued: deque[int] = deque()
        # waiting, running, finished, failed, canceled
        self.counts = [self.n, 0, 0, 0, 0]
        self.state: bytearray | None = None
        self.errors: dict[int, str] = {}
        self.canceled = False
        #: more tasks may come (see `append`); the job is not done until it is closed
        self.open = bool(spec.get("open"))
        self.submitted = submitted
        self.ended: float | None = None if self.n or self.open else submitted
        self.cpus = int(spec.get("cpus", 1))
        self.res: dict[str, int] = dict(spec.get("res") or {})
        self.priority = int(spec.get("priority", 0))
        self.time_request = float(spec.get("time_request") or 0)
        # within the columns also for journals written before the server checked them
        self.crash_limit = min(int(spec.get("crash_limit", 5)), MAX_CRASH_LIMIT)
        self.max_retries = min(int(spec.get("max_retries", 0)), MAX_RETRIES)
        delay = spec.get("retry_delay")
        #: (first, most) seconds a retry waits, or None: retries run at once
        self.retry_delay: tuple[float, float] | None = (
            (float(delay[0]), float(delay[1])) if delay else None)
        #: seconds after a task's first failure from which it is no longer retried
        self.retry_timeout: float | None = float(spec.get("retry_timeout") or 0) or None
        #: delayed retries: index -> server time from which the task may run again
        self.retry_at: dict[int, float] = {}
        #: index -> server time of the task's first failure, while a retry timeout applies
        #: and the task has not ended
        self.failed_since: dict[int, float] = {}
        self.mean_runtime: float | None = None
        #: a function job's results (hpcqueue.calls): index -> the outcome's bytes, or the
        #: path of a file holding them; the last instance's, kept until the job is forgotten
        self.results: dict[int, bytes | str] = {}
        #: ids of the jobs this one waits for that have not ended (the state keeps it)
        self.waiting_on: set[int] = set()
        #: index -> how many of the tasks it waits for have not finished (waiting tasks only)
        self.unmet: dict[int, int] = {}
        #: index -> the indexes it waits for, and index -> the indexes that wait for it
        self.deps: dict[int, list[int]] | None = None
        self.dependants: dict[int, list[int]] | None = None
        #: why the job was canceled by a dependency (None: it was not)
        self.reason: str | None = None
        if spec.get("task_deps"):
            self._task_graph(spec["task_deps"])

    def _task_graph(self, pairs: list) -> None:
        """Counters and lists from ``task_deps`` (checked: see hpcqueue.deps); the tasks
        that wait for none go into the queue."""
        index = self.ids.index_of
        deps: dict[int, list[int]] = {}
        dependants: dict[int, list[int]] = {}
        for tid, before in pairs:
            i = index(tid)
            deps[i] = [index(b) for b in before]
            for j in deps[i]:
                dependants.setdefault(j, []).append(i)
        self.deps, self.dependants = deps, dependants
        self.unmet = {i: len(d) for i, d in deps.items() if d}
        self._columns()
        self.cursor = self.n
        self.requeued.extend(i for i in range(self.n) if i not in self.unmet)

    # ------------------------------------------------------------- columns

    def _columns(self) -> None:
        n = self.n
        self.state = bytearray(n)
        self.starts = array("H", bytes(2 * n))
        self.crashes = bytearray(n)
        self.retries = bytearray(n)
        self.exit = array("i", bytes(4 * n))
        self.worker = array("I", bytes(4 * n))
        self.t0 = array("d", bytes(8 * n))
        self.t1 = array("d", bytes(8 * n))

    def append(self, entries: list[str]) -> None:
        """Add tasks for ENTRIES to an open job: ids n .. n+k-1, waiting.  O(k) amortized:
        the entries list and the columns (if allocated) are extended in place."""
        k = len(entries)
        n = self.n + k
        self.entries.extend(entries)  # the job's own copy (see ServerState._on_job)
        self.spec["ids"] = [[0, n - 1, 1]]  # so that the spec describes the job as it is
        self.ids = IdRanges(self.spec["ids"])  # one range: O(1)
        self.n = n
        self.counts[WAITING] += k
        if self.state is not None:
            zeros = bytes(k)
            self.state.extend(zeros)
            self.crashes.extend(zeros)
            self.retries.extend(zeros)
            for column in (self.starts, self.exit, self.worker, self.t0, self.t1):
                column.frombytes(bytes(k * column.itemsize))

    # ------------------------------------------------------------- queries

    @property
    def waiting(self) -> int:
        return self.counts[WAITING]

    @property
    def available(self) -> int:
        """Waiting tasks that may be handed out now (not delayed retries, nor tasks or jobs
        waiting for dependencies)."""
        if self.waiting_on:
            return 0
        return self.counts[WAITING] - len(self.retry_at) - len(self.unmet)

    @property
    def running(self) -> int:
        return self.counts[RUNNING]

    @property
    def done(self) -> bool:
        return self.counts[WAITING] == 0 and self.counts[RUNNING] == 0 and not self.open

    def job_state(self) -> JobState:
        c = self.counts
        if c[WAITING] == 0 and c[RUNNING] == 0 and not self.open:
            if c[FAILED]:
                return JobState.FAILED
            if c[CANCELED]:
                return JobState.CANCELED
            return JobState.FINISHED
        if c[RUNNING] or c[FINISHED] or c[FAILED]:
            return JobState.RUNNING
        return JobState.WAITING

    def task_state(self, index: int) -> int:
        code = self.state[index] if self.state is not None else WAITING
        if code == WAITING and self.canceled:
            return CANCELED
        return code

    def task_row(self, index: int) -> dict:
        """One task as plain values, for listings and `task info`."""
        code = self.task_state(index)
        row = {
            "id": self.ids.id_at(index),
            "state": STATE_CODES[code].value,
            "instance": None,
            "exit_code": None,
            "worker": None,
            "start": None,
            "end": None,
            "crashes": 0,
            "retries": 0,
        }
        if self.state is not None and self.starts[index]:
            row["instance"] = self.starts[index] - 1
            row["worker"] = self.worker[index] or None
            row["start"] = self.t0[index] or None
            row["crashes"] = self.crashes[index]
            row["retries"] = self.retries[index]
            if code in (FINISHED, FAILED):
                row["end"] = self.t1[index] or None
                row["exit_code"] = self.exit[index]
        if self.entries is not None:
            row["entry"] = self.entries[index]
        if index in self.errors:
            row["error"] = self.errors[index]
        elif code == CANCELED and self.reason:
            row["error"] = self.reason
        if index in self.retry_at:
            row["retry_at"] = self.retry_at[index]
        return row

    def indexes_in(self, code: int):
        """Indexes of tasks in state `code`, in order."""
        if self.state is None:
            if code == (CANCELED if self.canceled else WAITING):
                yield from range(self.n)
            return
        for i in range(self.n):
            if self.task_state(i) == code:
                yield i

    # ------------------------------------------------------------- transitions

    def take(self, k: int) -> list[int]:
        """Up to `k` waiting indexes, retried ones first (does not mark them)."""
        out: list[int] = []
        requeued = self.requeued
        if requeued:
            seen = set()
            delayed = self.retry_at
            while requeued and len(out) < k:
                i = requeued.popleft()
                # replay can leave an index queued twice: hand it out once; and an index
                # left queued by replay may since wait for a delayed retry: not before it
                if self.state[i] == WAITING and i not in seen and (
                        not delayed or i not in delayed):
                    seen.add(i)
                    out.append(i)
        if len(out) < k and self.cursor < self.n:
            stop = min(self.n, self.cursor + (k - len(out)))
            out.extend(range(self.cursor, stop))
            self.cursor = stop
        return out

    def untake(self, idxs: list[int]) -> None:
        """Give back indexes that `take` handed out and that were never started (their
        start could not be journaled), so that they wait as before."""
        for i in reversed(idxs):
            if i == self.cursor - 1:
                self.cursor = i
            else:
                self.requeued.appendleft(i)

    def start(self, i: int, worker_id: int, t: float) -> None:
        if self.state is None:
            self._columns()
        self.state[i] = RUNNING
        if i >= self.cursor:  # replay: the journal holds starts, not takes
            self.cursor = i + 1
        self.starts[i] += 1
        self.worker[i] = worker_id
        self.t0[i] = t
        self.counts[WAITING] -= 1
        self.counts[RUNNING] += 1

    def instance(self, i: int) -> int:
        return self.starts[i] - 1 if self.state is not None else 0

    def finish(self, i: int, code: int, t0: float, t1: float, msg: str | None,
               t: float = 0.0) -> bool:
        """Record a result that the server got at T (its clock); returns True if the task
        went back to waiting (a retry, delayed by ``retry_delay`` from T)."""
        self.counts[RUNNING] -= 1
        self.t0[i] = t0 or self.t0[i]
        self.t1[i] = t1
        try:
            self.exit[i] = code
        except OverflowError:  # only from journals written before the server clamped codes
            self.exit[i] = EXIT_MAX if code > 0 else EXIT_MIN
        run = t1 - t0 if t0 and t1 > t0 else 0.0
        m = self.mean_runtime
        self.mean_runtime = run if m is None else 0.9 * m + 0.1 * run
        if code == 0:
            self.state[i] = FINISHED
            self.counts[FINISHED] += 1
            if self.errors:
                self.errors.pop(i, None)  # an earlier attempt's error
            if self.failed_since:
                self.failed_since.pop(i, None)
            if self.dependants is not None:
                self._release(i)
            return False
        if self.retries[i] < self.max_retries and not self.canceled:
            timeout = self.retry_timeout
            if timeout is None or t - self.failed_since.setdefault(i, t) < timeout:
                self.retries[i] += 1
                delay = self.retry_delay
                at = t + retry_delay(*delay, self.retries[i]) if delay else None
                return self._requeue(i, at)
            msg = (f"{msg or f'exit code {code}'}; not retried: {timeout:g}s have passed "
                   "since its first failure (retry timeout)")
        if self.failed_since:
            self.failed_since.pop(i, None)
        self.state[i] = FAILED
        self.counts[FAILED] += 1
        if msg:
            self.errors[i] = msg
        if self.dependants is not None:
            self._cancel_dependants(i)
        return False

    def put_back(self, i: int, crashed: bool) -> bool:
        """A running task whose worker went away; returns True if it failed for good."""
        self.counts[RUNNING] -= 1
        if self.canceled:
            self.state[i] = CANCELED
            self.counts[CANCELED] += 1
            return False
        if crashed:
            self.crashes[i] += 1 if self.crashes[i] < 255 else 0
            if self.crashes[i] >= self.crash_limit:
                self.state[i] = FAILED
                self.exit[i] = -1
                self.counts[FAILED] += 1
                self.errors[i] = (f"its worker was lost {self.crashes[i]} times (crash "
                                  "limit); a lost worker cannot tell which of its tasks "
                                  "caused it, so each task it ran was charged")
                if self.failed_since:
                    self.failed_since.pop(i, None)
                if self.dependants is not None:
                    self._cancel_dependants(i)
                return True
        return not self._requeue(i)

    def _requeue(self, i: int, at: float | None = None) -> bool:
        """Back to waiting (in the queue, or delayed until AT); False if the task was started
        too often and failed instead."""
        if self.starts[i] >= MAX_STARTS:
            self.state[i] = FAILED
            self.exit[i] = -1
            self.counts[FAILED] += 1
            self.errors[i] = (f"started {self.starts[i]} times without an end (handed back or "
                              "its worker stopped each time); given up")
            if self.failed_since:
                self.failed_since.pop(i, None)
            if self.dependants is not None:
                self._cancel_dependants(i)
            return False
        self.state[i] = WAITING
        self.counts[WAITING] += 1
        if at is None:
            self.requeued.append(i)
        else:
            self.retry_at[i] = at
        return True

    def _release(self, i: int) -> None:
        """Task I finished: count its dependants down; those with none left go into the
        queue.  O(its dependants)."""
        unmet = self.unmet
        for j in self.dependants.get(i, ()):
            left = unmet.get(j)
            if left is None:  # (canceled: a job cancel empties `unmet`)
                continue
            if left <= 1:
                del unmet[j]
                self.requeued.append(j)
            else:
                unmet[j] = left - 1

    def _cancel_dependants(self, i: int) -> None:
        """Task I failed for good: the tasks that wait for it, and those that wait for them,
        can never run: canceled, each with the reason.  O(the tasks canceled and their
        dependants)."""
        failed = self.ids.id_at(i)
        stack = [(j, i) for j in self.dependants.get(i, ())]
        unmet, state, c = self.unmet, self.state, self.counts
        while stack:
            j, via = stack.pop()
            if unmet.pop(j, None) is None:  # not waiting (already canceled)
                continue
            state[j] = CANCELED
            c[WAITING] -= 1
            c[CANCELED] += 1
            self.errors[j] = (f"canceled: task {failed} it depends on failed" if via == i else
                              f"canceled: task {self.ids.id_at(via)} it depends on was "
                              f"canceled (task {failed} failed)")
            stack.extend((k, j) for k in self.dependants.get(j, ()))

    def blocked_by(self, i: int) -> list[int]:
        """Ids of the tasks that task I waits for and that have not finished."""
        if i not in self.unmet:
            return []
        return [self.ids.id_at(j) for j in self.deps.get(i, ()) if self.state[j] != FINISHED]

    def wake(self, i: int, at: float) -> bool:
        """A delayed retry whose time AT has come goes into the queue; False if it is not
        delayed until AT (canceled since, or an older entry)."""
        if self.retry_at.get(i) != at:
            return False
        del self.retry_at[i]
        self.requeued.append(i)
        return True

    def cancel(self, reason: str | None = None) -> list[int]:
        """Cancel waiting and running tasks (and close an open job); returns the indexes that
        were running.  REASON: why, when a dependency canceled it."""
        self.canceled = True
        if reason is not None:
            self.reason = reason
        self.unmet.clear()  # counted as waiting: canceled below
        self.waiting_on.clear()
        self.open = False
        c = self.counts
        c[CANCELED] += c[WAITING]
        c[WAITING] = 0
        self.requeued.clear()
        self.retry_at.clear()  # delayed retries were counted as waiting: canceled above
        self.failed_since.clear()
        self.cursor = self.n
        running: list[int] = []
        if self.state is not None and c[RUNNING]:
            state = self.state
            for i in range(self.n):
                if state[i] == RUNNING:
                    state[i] = CANCELED
                    running.append(i)
            c[CANCELED] += len(running)
            c[RUNNING] = 0
        return running

    def summary(self) -> dict:
        c = self.counts
        out = {
            "id": self.id,
            "name": self.spec.get("name") or "",
            "state": self.job_state().value,
            "tasks": self.n,
            "waiting": c[WAITING],
            "running": c[RUNNING],
            "finished": c[FINISHED],
            "failed": c[FAILED],
            "canceled": c[CANCELED],
            "submitted": self.submitted,
            "ended": self.ended,
            "priority": self.priority,
            "open": self.open,
        }
        if self.reason is not None:  # (only then: other jobs' rows stay as they were)
            out["reason"] = self.reason
        return out
