"""The Python API: a :class:`Client` of a running server, its :class:`Job` s and their
:class:`Task` s.

A client speaks the same authenticated protocol as the command line (which is built on
it): one connection for its requests, opened at the first and kept until :meth:`close`,
and a connection of its own for each wait (the server pushes progress and the end on it).
Every refusal comes back as a typed error from :mod:`hpcqueue.exceptions`: ``NotFound``,
``Refused``, ``Unavailable``; a server that is not there or went away is
``ServerUnreachable``.  docs/api.md shows it in use::

    with hpcqueue.Client() as client:
        job = client.submit(["./sim.sh"], array="1-1000", cpus=2)
        summary = job.wait()
        for task in job.tasks(state="failed"):
            print(task.id, task.exit_code, task.stderr())
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import (
    TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence,
)

from hpcqueue.exceptions import (
    ConnectionLost, NotFound, ServerUnreachable, UsageError, from_reply,
)
from hpcqueue.model import JobState
from hpcqueue.views import (  # noqa: F401 (the API's records, importable from here too)
    Job, JobRef, JobSelector, JobSummary, Task, _job_selector, _states, _task_selector,
)

if TYPE_CHECKING:
    from hpcqueue.watch import Updates, Watch

ENV_PAGE_ROWS = "HPCQUEUE_PAGE_ROWS"  # rows a listing page may hold (tests page small ones)
#: requests that change nothing: asked again on a new connection if a kept one was stale
READ_ONLY = frozenset({"jobs", "job_info", "tasks", "task_info", "task_explain", "cat",
                       "task_results",
                       "failed", "workers", "worker_info", "alloc_list", "alloc_info",
                       "alloc_efficiency", "server_info"})



def check_reply(reply) -> dict:
    """REPLY if the server accepted the request, else the typed error it stands for."""
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise from_reply(reply)
    return reply


# ------------------------------------------------------------------ the client


class Client:
    """A client of the server of SERVER_DIR (default: $HPCQUEUE_SERVER_DIR, else
    ~/.hpcqueue-server, as the command line).  TIMEOUT: seconds a request may take (waits
    have none).  Use it as a context manager, or call :meth:`close`."""

    def __init__(self, server_dir: str | os.PathLike | None = None, *,
                 timeout: float | None = 60.0):
        from hpcqueue.access import server_dir as resolve

        self.server_dir: Path = resolve(server_dir)
        self.timeout = timeout
        self._conn = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({str(self.server_dir)!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connection (a later request opens a new one)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -------------------------------------------------------------- the wire

    def connect(self, timeout: float | None = None):
        """A new connection to the server (a :class:`~hpcqueue.protocol.BlockingConnection`),
        or ServerUnreachable."""
        from hpcqueue.access import connect

        return connect(self.server_dir, timeout=timeout)

    def _lost(self, e: Exception) -> ServerUnreachable:
        if isinstance(e, TimeoutError):
            return ServerUnreachable(f"the server in {self.server_dir} did not answer within "
                                     f"{self.timeout:g}s: is it overloaded or stopped?")
        return ServerUnreachable(f"lost the connection to the server in {self.server_dir} "
                                 f"({e}): is it still running? `hpcqueue server info` says")

    def request(self, op: str, **fields) -> dict:
        """Send one request and return the server's reply, or raise the error it stands for.
        The building block of the other methods (ops: see hpcqueue/server/handlers.py)."""
        with self._lock:
            reused = self._conn is not None
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = self.connect(self.timeout)
                try:
                    self._conn.send({"op": op, **fields})
                    reply = self._conn.recv()
                    break
                except (OSError, ConnectionLost) as e:
                    self._conn.close()
                    self._conn = None
                    # a kept connection may be stale (the server restarted since): a request
                    # that changes nothing is asked again on a new one
                    if not (attempt == 1 and reused and op in READ_ONLY
                            and not isinstance(e, TimeoutError)):
                        raise self._lost(e) from None
        return check_reply(reply)

    def pages(self, op: str, count: Callable[[dict], int], limit: int | None = None,
              **fields) -> Iterator[dict]:
        """The pages of a paged listing (`jobs`, `tasks`), one request each on a connection
        of their own.  The request for the next page goes out as soon as a page has come, so
        the server builds it while this one is used; COUNT(page) says how many rows a page
        holds, and pages stop after LIMIT rows.  The job a `last` named holds for the later
        pages."""
        size = int(os.environ.get(ENV_PAGE_ROWS) or 0) or None
        conn = self.connect(self.timeout)
        try:
            left = limit
            conn.send({"op": op, **fields, "limit": _least(left, size)})
            while True:
                page = check_reply(conn.recv())
                if left is not None:
                    left -= count(page)
                more = page.get("next") is not None and (left is None or left > 0)
                if more:
                    if "job" in fields:
                        fields["job"] = page["job"]
                    conn.send({"op": op, **fields, "after": page["next"],
                               "limit": _least(left, size)})
                yield page
                if not more:
                    return
        except (OSError, ConnectionLost) as e:
            raise self._lost(e) from None
        finally:
            conn.close()

    def watch(self, jobs: JobSelector, interval: float | None = 0.25,
              unfinished: bool = False, failures: bool = False) -> Watch:
        """The summaries of JOBS as the server pushes them, every INTERVAL seconds (None:
        only at the end), until they have all ended: each item is a list of
        :class:`JobSummary`, and the last one is the final list (also ``.final``).
        UNFINISHED: `all` means the jobs unfinished now, not every job held.  FAILURES:
        items may also be :class:`~hpcqueue.watch.Failures`, the tasks that failed for good
        (those failed so far first, then as they fail).  The connection opens now; leaving
        the loop early, ``close()`` or a ``with`` block closes it."""
        from hpcqueue.watch import Watch

        return Watch(self, _job_selector(jobs), interval, unfinished, failures)

    def updates(self, interval: float | None = None, jobs: int | None = None) -> Updates:
        """What changes on the server, pushed as it happens, at most every INTERVAL seconds
        (None: the server's 0.25; at least 0.1): the first item is everything (the JOBS most
        recent jobs, default 1000, and every unfinished one; running workers; queues;
        totals), each later one a dict of what changed (``jobs``, ``forgotten``,
        ``workers``, ``queues``, ``server``).  Never ends by itself: ``close()`` it (from
        any thread) or leave a ``with`` block.  What `hpcqueue dashboard` shows."""
        from hpcqueue.watch import Updates

        return Updates(self, interval, jobs, self.timeout)

    # -------------------------------------------------------------- jobs

    def submit(self, command: str | Sequence[str] | None = None, *,
               array: str | int | range | Iterable[int] | None = None,
               each_line: str | os.PathLike | Iterable[str] | None = None,
               from_json: str | os.PathLike | Sequence[Any] | None = None,
               name: str | None = None, cpus: int = 1,
               resources: Mapping[str, int] | None = None,
               priority: int | str = "normal", unique: str | None = None,
               max_retries: int = 0, retry_delay=None, retry_timeout=None,
               crash_limit: int = 5, time_limit=None, time_request=None,
               stdout: str | os.PathLike | None = None,
               stderr: str | os.PathLike | None = None,
               stream: str | os.PathLike | None = None,
               cwd: str | os.PathLike | None = None,
               env: Mapping[str, str] | None = None,
               depends_on: JobSelector | None = None,
               depends_on_any: bool = False,
               deps: Mapping[int, Iterable[int]] | None = None,
               max_fails: int | None = None, stdin: bytes | str | None = None,
               task_dir: bool = False, keep_task_dir_on_fail: bool = False,
               tasks: str | range | Iterable[int] | None = None) -> Job:
        """Submit a job, as `hpcqueue submit` does; its tasks are:

        - one task, by default;
        - ARRAY: one per task id ('1-1000', '0-99:2', '1,5,10-20', a range or ints;
          $HPCQUEUE_TASK_ID);
        - EACH_LINE: one per non-blank line of a file (a path; '-' reads stdin) or of a list
          of strings ($HPCQUEUE_ENTRY); with no COMMAND each line is a shell command;
        - FROM_JSON: one per element of a JSON array in a file, or of a list of values
          ($HPCQUEUE_ENTRY is the element as JSON).

        COMMAND is an argv (a list) or a shell command line (a str, run by ``sh -c``).
        Durations (TIME_LIMIT, TIME_REQUEST, RETRY_TIMEOUT) are seconds, a timedelta or
        text such as '1h30m'; RETRY_DELAY is a duration, a (MIN, MAX) pair or 'MIN:MAX'.
        The other arguments are the options of `hpcqueue submit`.  Relative paths start at
        the current directory.

        Dependencies: DEPENDS_ON (a Job, a job id, a list of them, or a selector such as
        '1-3,last') makes the job wait until those jobs have ended with every task
        finished; if one fails or is canceled, this job is canceled with the reason, unless
        DEPENDS_ON_ANY (it runs once they have ended, however).  DEPS maps a task id to the
        ids of tasks of the same job it waits for ({2: [0, 1]}: task 2 runs after tasks 0
        and 1 finished; if one of them fails, task 2 is canceled); with FROM_JSON an
        element's own ``"deps"`` field (a list of element positions) does the same.

        MAX_FAILS cancels the job once that many tasks have failed; STDIN (bytes or text)
        is every task's stdin; TASK_DIR gives each task a temporary folder
        ($HPCQUEUE_TASK_DIR), removed after it unless it failed and KEEP_TASK_DIR_ON_FAIL;
        TASKS picks tasks of EACH_LINE or FROM_JSON by their ids (0 for the first), which
        they keep, so that failed ones run again under their ids.

        Bad arguments (a task dependency cycle, an unknown task id) raise UsageError; the
        server's refusal (a job id it does not hold) Refused."""
        from hpcqueue.jobspec import make_spec, python_options, read_json, read_lines

        if isinstance(command, str):
            if name is None and command.split():
                name = os.path.basename(command.split()[0])
            command = ["sh", "-c", command]
        opts = python_options(
            name=name, array=array, cpus=cpus, resources=resources, priority=priority,
            unique=unique, max_retries=max_retries, retry_delay=retry_delay,
            retry_timeout=retry_timeout, crash_limit=crash_limit, time_limit=time_limit,
            time_request=time_request, stdout=stdout, stderr=stderr, stream=stream, cwd=cwd,
            env=env, depends_on=depends_on, depends_on_any=depends_on_any, deps=deps,
            max_fails=max_fails, stdin=stdin, task_dir=task_dir,
            keep_task_dir_on_fail=keep_task_dir_on_fail, tasks=tasks)
        lines = items = None
        source = ""
        if each_line is not None:
            if isinstance(each_line, (str, os.PathLike)):
                source = repr(os.fspath(each_line))
                lines = read_lines(os.fspath(each_line))
            else:
                lines = _strings(each_line, "each_line")
                source = "each_line"
        if from_json is not None:
            if isinstance(from_json, (str, os.PathLike)):
                source = repr(os.fspath(from_json))
                items = read_json(os.fspath(from_json))
            else:
                items = _json_items(from_json)
                source = "from_json"
        spec = make_spec(opts, list(command or ()), lines=lines, items=items, source=source,
                         submit_dir=os.getcwd())
        return self._submit_spec(spec)

    def _submit_spec(self, spec: dict) -> Job:
        """Submit a job spec as :mod:`hpcqueue.jobspec` makes it (the seam for other kinds
        of task built on top of :meth:`submit`)."""
        reply = self.request("submit", spec=spec)
        return Job(self, reply["job"], existing=bool(reply.get("existing")))

    def map(self, fn: Callable, iterable: Iterable, **options) -> list:
        """``[fn(item) for item in iterable]``, each call a task run by a worker in its own
        Python (the function and items travel with cloudpickle); waits, and raises what the
        first failed call raised.  OPTIONS are `submit`'s (``cpus``, ``time_limit``,
        ``max_retries``, ``stdout``, ...; see :data:`hpcqueue.functions.OPTIONS`)."""
        job = self.submit_map(fn, iterable, **options)
        if job is None:
            return []
        job.wait()
        return job.results()

    def submit_map(self, fn: Callable, iterable: Iterable, **options) -> Job | None:
        """As :meth:`map`, without waiting: the job (None for an empty ITERABLE)."""
        from hpcqueue.functions import function_spec

        items = list(iterable)
        return self._submit_spec(function_spec(fn, items, **options)) if items else None

    def submit_function(self, fn: Callable, *args, **kwargs) -> Job:
        """A job of one task that calls ``fn(*args, **kwargs)`` on a worker;
        ``job.result()`` waits for its value.  (Options: :meth:`submit_map` with one item,
        or :func:`hpcqueue.functions.calls_spec`.)"""
        from hpcqueue.functions import call_spec

        return self._submit_spec(call_spec(fn, *args, **kwargs))

    def job(self, ref: JobRef) -> Job:
        """The job REF names (its id, or 'last'); NotFound if the server has no such job."""
        reply = self.request("job_info", job=ref.id if isinstance(ref, Job) else ref)
        return Job(self, reply["id"])

    def jobs(self, selector: JobSelector = "all",
             state: str | JobState | Iterable[str | JobState] | None = None
             ) -> list[JobSummary]:
        """The jobs of SELECTOR (default all), in a STATE (one or several), in id order."""
        names = [s.value for s in JobState]
        wanted = [] if state is None else [state] if isinstance(state, str) else list(state)
        wanted = [s.value if isinstance(s, JobState) else s for s in wanted]
        bad = [s for s in wanted if s not in names]
        if bad:
            raise UsageError(f"state {bad[0]!r} is not a job state: use {', '.join(names)}")
        out = []
        for page in self.pages("jobs", lambda p: len(p["jobs"]), None,
                               jobs=_job_selector(selector), filter=wanted):
            out += [JobSummary.from_dict(j) for j in page["jobs"]]
        return out

    def wait(self, jobs: JobSelector, progress: bool = False,
             unfinished: bool = False) -> list[JobSummary]:
        """Block until JOBS have ended; their final summaries.  PROGRESS: show the progress
        view of `job progress` on stderr meanwhile."""
        with self.watch(jobs, 0.25 if progress else None, unfinished) as watch:
            if not progress:
                for _ in watch:
                    pass
            else:
                from hpcqueue.progress import ProgressBar

                with ProgressBar() as bar:
                    for summaries in watch:
                        bar.update([j.as_dict() for j in summaries])
        final = watch.final or []
        if not final and not isinstance(jobs, str):
            raise NotFound(f"no job {_job_selector(jobs)} left to wait for: it was forgotten")
        return final

    def cancel(self, jobs: JobSelector) -> list[int]:
        """Cancel the waiting and running tasks of JOBS (an id, '1-3,7', 'last', 'all', or
        ids); the ids of the jobs canceled (those that had not ended)."""
        return self.request("cancel", jobs=_job_selector(jobs))["canceled"]

    def forget(self, jobs: JobSelector) -> list[int]:
        """Drop ended JOBS from the server and its journal; the ids forgotten.  An
        unfinished job is Refused (with 'all': the ended jobs)."""
        return self.request("forget", jobs=_job_selector(jobs))["forgotten"]

    # -------------------------------------------------------------- the rest

    def workers(self, all: bool = False) -> list[dict]:
        """The connected workers (ALL: the stopped and lost ones too), as `worker list
        --output json` shows them."""
        return self.request("workers", all=all)["workers"]

    def queues(self) -> list[dict]:
        """The allocation queues, as `alloc list --output json` shows them."""
        return self.request("alloc_list")["queues"]

    def server_info(self) -> dict:
        """The server's address, version, uptime, jobs and workers."""
        reply = dict(self.request("server_info"))
        reply.pop("ok", None)
        return reply


def _strings(values, what: str) -> list[str]:
    try:
        out = list(values)
    except TypeError:
        out = None
    if out is None or not all(isinstance(v, str) for v in out):
        raise UsageError(f"{what} must be a path or a list of strings, not {values!r}")
    return [line for v in out for line in v.splitlines() if line.strip()]


def _json_items(values) -> list[str]:
    if isinstance(values, (bytes, Mapping)) or not isinstance(values, Iterable):
        raise UsageError(f"from_json must be a path or a list of values, not {values!r}")
    try:
        return [json.dumps(v) for v in values]
    except (TypeError, ValueError) as e:
        raise UsageError(f"from_json: an element is not JSON: {e}") from None


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)
