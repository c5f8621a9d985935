"""What a client holds of the server's jobs: :class:`Job` (a job by id, whose methods ask
the server), :class:`Task` (one task as it was listed) and :class:`JobSummary` (a job's
counts at one moment).  :class:`hpcqueue.client.Client` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Union

from hpcqueue.exceptions import NotFound, OutputUnreadable, UsageError
from hpcqueue.model import JobState, TaskState

if TYPE_CHECKING:
    from hpcqueue.client import Client

JobRef = Union[int, str, "Job"]
JobSelector = Union[int, str, "Job", Iterable[Union[int, "Job"]]]


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class JobSummary:
    """A job's counts at one moment: a row of `job list`, a progress update, or the end of
    a wait.  `state` is a :class:`~hpcqueue.model.JobState` (a str)."""

    id: int
    name: str
    state: JobState
    tasks: int
    waiting: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    canceled: int = 0
    #: tasks on a worker that has not had room to start them yet (progress updates only)
    assigned: int = 0
    submitted: float | None = None
    ended: float | None = None
    priority: int = 0
    #: the job takes more tasks (`submit --each-line -` from a pipe)
    open: bool = False

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> JobSummary:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        values["state"] = JobState(values["state"])
        return cls(**values)

    def as_dict(self) -> dict:
        """Its fields as a dict (`state` a str), as the server sends a summary."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["state"] = self.state.value
        return row

    @property
    def done(self) -> bool:
        """The job has ended: every task finished, failed or was canceled."""
        return self.state not in (JobState.WAITING, JobState.RUNNING) and not self.open

    @property
    def ok(self) -> bool:
        """Every task of the job finished (exit code 0)."""
        return self.finished == self.tasks


@dataclass
class Task:
    """One task of a job, as the server saw it when it was listed.  Its output is read
    on demand (:meth:`stdout`, :meth:`stderr`) from its files or the job's stream logs."""

    job: Job = field(repr=False)
    id: int
    state: TaskState
    exit_code: int | None = None
    #: its line (--each-line) or JSON element (--from-json); None for array tasks
    entry: str | None = None
    #: why it failed, when that is not an exit code (a time limit, a lost worker, ...)
    error: str | None = None
    worker: int | None = None
    #: which run of the task this is (0 the first; retries and restarts add one)
    instance: int | None = None
    start: float | None = None
    end: float | None = None
    retries: int = 0
    crashes: int = 0

    @classmethod
    def from_row(cls, job: Job, row: Mapping[str, Any]) -> Task:
        known = {f.name for f in fields(cls)} - {"job"}
        values = {k: v for k, v in row.items() if k in known}
        values["state"] = TaskState(values["state"])
        return cls(job=job, **values)

    def output(self, stream: str = "stdout", tail: int | None = None) -> bytes:
        """What the task's latest run wrote to STREAM ('stdout' or 'stderr'), as `job cat`
        reads it (TAIL: its last lines only): b'' if it has not written (or not run) yet.
        Refused if the job did not keep that stream (``stdout="none"``);
        :class:`~hpcqueue.exceptions.OutputUnreadable` (with what could be read as
        ``.data``) if a file cannot be read or a part of a stream log is damaged."""
        import io

        from hpcqueue.taskoutput import write_output

        if stream not in ("stdout", "stderr"):
            raise UsageError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        if tail is not None and (not isinstance(tail, int) or tail < 0):
            raise UsageError(f"tail must be a number of lines (0 or more), not {tail!r}")
        reply = self.job.client.request("cat", job=self.job.id, stream=stream, task=self.id)
        out = io.BytesIO()
        problem = write_output(out, reply, stream, task=self.id, tail=tail)
        if problem:
            raise OutputUnreadable(f"job {self.job.id} task {self.id} {stream}: {problem}",
                                   out.getvalue())
        return out.getvalue()

    def result(self) -> Any:
        """The value the task's call returned (a job of Python calls), or what it raised."""
        from hpcqueue.functions import decode_result

        rows = list(self.job.result_rows(self.id))
        if not rows:
            raise NotFound(f"job {self.job.id} has no task {self.id}")
        return decode_result(rows[0])

    def stdout(self, encoding: str = "utf-8") -> str:
        """The task's stdout as text (undecodable bytes become U+FFFD)."""
        return self.output("stdout").decode(encoding, errors="replace")

    def stderr(self, encoding: str = "utf-8") -> str:
        """The task's stderr as text (undecodable bytes become U+FFFD)."""
        return self.output("stderr").decode(encoding, errors="replace")


# ------------------------------------------------------------------ jobs


class Job:
    """A job on the server, by id.  Methods ask the server each time: nothing is cached."""

    def __init__(self, client: Client, job_id: int, existing: bool = False):
        self.client = client
        self.id = job_id
        #: submit found an unfinished job with the same `unique` key and returned it
        self.existing = existing

    def __repr__(self) -> str:
        return f"Job({self.id})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Job) and other.id == self.id \
            and other.client.server_dir == self.client.server_dir

    def __hash__(self) -> int:
        return hash(self.id)

    def info(self) -> dict:
        """Everything `job info --output json` shows: counts, spec, times, ..."""
        reply = dict(self.client.request("job_info", job=self.id))
        reply.pop("ok", None)
        return reply

    def summary(self) -> JobSummary:
        """The job's counts now."""
        return JobSummary.from_dict(self.info())

    def wait(self, progress: bool = False) -> JobSummary:
        """Block until the job has ended; its final counts.  PROGRESS: show the progress
        view of `job progress` on stderr meanwhile."""
        return self.client.wait([self.id], progress=progress)[0]

    def progress(self, interval: float = 0.25) -> Iterator[JobSummary]:
        """The job's counts as the server pushes them (every INTERVAL seconds) until it
        ends; the last one yielded is its final summary (``.done`` is true).  Stopping the
        iteration early closes the connection."""
        with self.client.watch([self.id], interval=interval) as watch:
            for jobs in watch:
                if jobs:
                    yield jobs[0]

    def tasks(self, selector: str | int | Iterable[int] | None = None,
              state: str | TaskState | Iterable[str | TaskState] | None = None,
              limit: int | None = None) -> Iterator[Task]:
        """The job's tasks in id order, fetched page by page as the iteration goes on:
        those of SELECTOR (e.g. '1-100,200', an id, or ids), in a STATE (one or several),
        LIMIT at most."""
        fields_ = {"job": self.id, "filter": _states(state),
                   "tasks": _task_selector(selector)}
        from hpcqueue.listing import page_rows

        left = limit
        for page in self.client.pages("tasks", lambda p: p["rows"], limit, **fields_):
            rows = page_rows(page)
            if left is not None:
                rows, left = rows[:left], left - len(rows[:left])
            for row in rows:
                yield Task.from_row(self, row)

    def result_rows(self, selector: str | int | Iterable[int] | None = None
                    ) -> Iterator[dict]:
        """The raw result rows of a job of Python calls (``map``, ``submit_function``), in
        task order, page by page: ``{id, state, exit_code, error, result | path}``; give
        each to :func:`hpcqueue.functions.decode_result`.  Refused for a job of commands."""
        tasks = _task_selector(selector)
        for page in self.client.pages("task_results", lambda p: len(p["results"]), None,
                                      job=self.id, tasks=tasks):
            for row in page["results"]:
                row["job"] = page["job"]
                yield row

    def results(self, selector: str | int | Iterable[int] | None = None) -> list:
        """The values the calls of this job returned, in task order (wait for the job
        first).  A call that raised raises here: its exception, with the remote traceback
        as ``remote_traceback`` and a :class:`~hpcqueue.exceptions.RemoteError` as its
        cause."""
        from hpcqueue.functions import decode_result

        return [decode_result(row) for row in self.result_rows(selector)]

    def result(self) -> Any:
        """The value of a job of one call (``submit_function``), waiting for it to end."""
        self.wait()
        values = self.results()
        if len(values) != 1:
            raise UsageError(f"job {self.id} has {len(values)} calls: use results()")
        return values[0]

    def task(self, task_id: int) -> Task:
        """One task, by its id."""
        reply = self.client.request("task_info", job=self.id, task=task_id)
        return Task.from_row(self, reply["task"])

    def cancel(self) -> bool:
        """Cancel the job's waiting and running tasks; False if it had ended."""
        return bool(self.client.cancel(self.id))

    def forget(self) -> None:
        """Drop the ended job from the server (Refused while it is unfinished)."""
        self.client.forget(self.id)


def _states(state) -> list[str]:
    if state is None:
        return []
    items = [state] if isinstance(state, str) else list(state)
    names = [s.value for s in TaskState]
    out = []
    for s in items:
        value = s.value if isinstance(s, TaskState) else s
        if value not in names:
            raise UsageError(f"state {s!r} is not a task state: use {', '.join(names)}")
        out.append(value)
    return out


def _task_selector(selector) -> str | None:
    from hpcqueue.selectors import format_ranges, parse_tasks

    if selector is None:
        return None
    if isinstance(selector, int) and not isinstance(selector, bool):
        text = str(selector)
    elif isinstance(selector, str):
        text = selector
    elif isinstance(selector, range) and selector.step == 1 and len(selector):
        text = f"{selector[0]}-{selector[-1]}"
    else:
        try:
            text = ",".join(str(int(i)) for i in selector)
        except (TypeError, ValueError):
            raise UsageError(f"tasks must be task ids: text such as '1-100,200', an int or "
                             f"ints, not {selector!r}") from None
    return format_ranges(parse_tasks(text))


def _job_selector(selector: JobSelector):
    """What a request's `jobs` field takes: a job id, selector text, or a list of ids."""
    from hpcqueue.selectors import parse_jobs

    if isinstance(selector, Job):
        return selector.id
    if isinstance(selector, int) and not isinstance(selector, bool):
        return selector
    if isinstance(selector, str):
        return str(parse_jobs(selector))
    try:
        ids = [s.id if isinstance(s, Job) else s for s in selector]
    except TypeError:
        ids = None
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UsageError(f"jobs must be a job id, text such as '1-3,7', 'last' or 'all', or "
                         f"job ids, not {selector!r}")
    return ids
