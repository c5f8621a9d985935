"""Request handlers: one function per client operation.

A handler gets the core and the request (a dict from the network, so nothing
in it is trusted) and returns the reply's fields.  A bad request raises
:class:`RequestError`, which becomes ``{"ok": False, "error": ...}``: the
connection and everything already accepted stay as they were.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_right
from itertools import chain

from hpcqueue import calls, deps
from hpcqueue.exceptions import NotFound, RequestError, UsageError
from hpcqueue.jobs import MAX_CRASH_LIMIT, MAX_RETRIES
from hpcqueue.jobspec import MAX_STDIN
from hpcqueue.listing import PAGE_ROWS, PAGE_ROWS_ENTRIES, list_page
from hpcqueue.model import (
    ENV_NAME,
    IdRanges,
    MAX_COUNT,
    MAX_SECONDS,
    MAX_TASK_ID,
    MAX_TASKS_PER_JOB,
    RESOURCE_NAME,
    STATE_CODES,
    JobState,
    TaskState,
    check_placeholders,
    fill_placeholders,
    param_hash,
)
from hpcqueue.selectors import parse_jobs, parse_tasks, task_spans
from hpcqueue.server import explain
from hpcqueue.server.core import Core
from hpcqueue.server.results import PAGE_RESULTS, check_function, results_page

HANDLERS = {}


def handler(name):
    def register(fn):
        HANDLERS[name] = fn
        return fn
    return register


# ------------------------------------------------------------------ checks
#
# Everything in a request is checked here before it becomes an event: an event
# that `ServerState.apply` cannot take would stay in the journal and stop every
# later restart.  Each check names the field and says what it must be.

def brief(value) -> str:
    """A value for an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value, name: str, low: int, high: int) -> int:
    if not _is_int(value):
        raise RequestError(f"{name!r} must be a whole number, not {brief(value)}")
    if not low <= value <= high:
        raise RequestError(f"{name!r} must be from {low} to {high}, not {value}")
    return value


def check_seconds(value, name: str) -> float | int | None:
    """None, or a number of seconds from 0 to MAX_SECONDS."""
    if value is None:
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value <= MAX_SECONDS):
        raise RequestError(f"{name!r} must be a number of seconds from 0 to {MAX_SECONDS:g}, "
                           f"not {brief(value)}")
    return value


def check_str(value, name: str, nul_ok: bool = False) -> str | None:
    """None, or a string (without NUL where it reaches a path, an argv or the environment)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name!r} must be a string, not {brief(value)}")
    if not nul_ok and "\0" in value:
        raise RequestError(f"{name!r} must not contain a NUL character")
    return value


def check_flag(req: dict, key: str) -> bool:
    value = req.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"{key!r} must be true or false, not {brief(value)}")
    return bool(value)


def _states(req: dict, key: str, enum) -> set | None:
    """A filter: None, or a list of state names of `enum`."""
    value = req.get(key)
    if value is None or value == []:
        return None
    names = [s.value for s in enum]
    if not (isinstance(value, list) and all(isinstance(v, str) and v in names for v in value)):
        raise RequestError(f"{key!r} must be a list of states from {', '.join(names)}, "
                           f"not {brief(value)}")
    return set(value)


def _selector(ref, key: str):
    """A job selector from the wire: a job id, or selector text (`1-3,7`, `last`, `all`)."""
    try:
        return parse_jobs(ref)
    except UsageError as e:
        raise RequestError(f"{key!r}: {e}") from None


def _job(core: Core, ref, key: str = "job"):
    """The one job REF names: a job id, `last`, or a selector naming one job."""
    jobs = core.state.jobs
    if not (_is_int(ref) or isinstance(ref, str)):
        raise RequestError(f"{key!r} must be a job id or 'last', not {brief(ref)}")
    one = _selector(ref, key).single()
    if one is None:
        raise RequestError(f"{key!r} must name one job, not {brief(ref)}: give one job id "
                           "or 'last'")
    if one == "last":
        if not jobs:
            raise NotFound("there are no jobs yet")
        return jobs[max(jobs)]
    job = jobs.get(one)
    if job is None:
        raise NotFound(f"no job {one}: `hpcqueue job list` shows the jobs")
    return job


def _job_ids(core: Core, ref, key: str = "jobs", unfinished_if_all: bool = False) -> list[int]:
    """Job ids, in order, from a selector (`all`, `1-3,7`, `last`), one job id, or a list of
    job ids and 'last'.  With UNFINISHED_IF_ALL, `all` means the jobs not done yet."""
    if isinstance(ref, list):
        if not all(_is_int(r) or r == "last" for r in ref):
            raise RequestError(f"{key!r} must be 'all', a job id, 'last' or a list of job "
                               f"ids, not {brief(ref)}")
        return list(dict.fromkeys(_job(core, r, key).id for r in ref))
    if not (_is_int(ref) or isinstance(ref, str)):
        raise RequestError(f"{key!r} must be 'all', a job id, 'last' or a list of job ids, "
                           f"not {brief(ref)}")
    sel = _selector(ref, key)
    jobs = core.state.jobs
    if sel.all and unfinished_if_all:
        return [j for j, job in jobs.items() if not job.done]
    return sel.resolve(sorted(jobs))


def _ranges(ids) -> tuple[list, int]:
    """Task id ranges as the state keeps them (sorted, disjoint), and their task count."""
    hint = "a list of [start, stop, step] ranges, e.g. [[1, 1000, 1]]"
    if not (isinstance(ids, list) and ids):
        raise RequestError(f"'ids' must be {hint}, not {brief(ids)}")
    out = []
    for r in ids:
        if not (isinstance(r, list) and len(r) == 3 and all(_is_int(x) for x in r)):
            raise RequestError(f"'ids' must be {hint}; {brief(r)} is not a range")
        start, stop, step = r
        if not (0 <= start <= stop <= MAX_TASK_ID and 1 <= step):
            raise RequestError(f"'ids': range {brief(r)} must have 0 <= start <= stop <= "
                               f"{MAX_TASK_ID} and a step of 1 or more")
        out.append([start, start + (stop - start) // step * step, step])
    out.sort()
    for (_, a1, _), (b0, _, _) in zip(out, out[1:]):
        if b0 <= a1:
            raise RequestError(f"'ids': ranges overlap near {b0}")
    total = sum((b - a) // s + 1 for a, b, s in out)
    if total > MAX_TASKS_PER_JOB:
        raise RequestError(f"a job holds at most {MAX_TASKS_PER_JOB:,} tasks, not {total:,}")
    return out, total


def _path_pattern(value, name: str) -> str | None:
    value = check_str(value, name)
    try:
        check_placeholders(value, repr(name))
    except UsageError as e:
        raise RequestError(str(e)) from None
    return value


def check_spec(spec) -> dict:
    """Validate a job spec from the network into the shape the state expects.

    Returns a new spec of known keys only, each checked against how the job
    (hpcqueue.jobs), the dispatch and the worker use it."""
    if not isinstance(spec, dict):
        raise RequestError(f"'spec' must be a map (a job spec), not {brief(spec)}")

    def get(key, default=None):
        value = spec.get(key)
        return default if value is None else value

    cmd = get("cmd")
    if cmd is not None and not (isinstance(cmd, list) and all(
            isinstance(a, str) and "\0" not in a for a in cmd)):
        raise RequestError("'cmd' must be a list of strings (without NUL characters)")
    shell = get("shell", False)
    if not isinstance(shell, bool):
        raise RequestError(f"'shell' must be true or false, not {brief(shell)}")
    is_open = check_flag(spec, "open")
    if is_open and spec.get("ids") == []:  # an open job may start with no task
        ids, total = [], 0
    else:
        ids, total = _ranges(spec.get("ids"))
    entries = get("entries")
    if entries is not None:
        _check_entries(entries)
        if len(entries) != total:
            raise RequestError(f"'entries' has {len(entries):,} items and 'ids' {total:,} "
                               "tasks: they must be as many")
    if is_open:
        if entries is None:
            raise RequestError("an open job ('open': true) needs 'entries' (maybe []): the "
                               "tasks added later are entries too")
        if ids and ids != [[0, total - 1, 1]]:
            raise RequestError(f"'ids' of an open job must be [[0, {total - 1}, 1]] (or [] "
                               "with no entries): the tasks added later take the next ids")
    kind = check_str(spec.get("kind"), "kind", nul_ok=True)
    function = None
    if kind == calls.KIND:
        function = check_function(spec, entries, is_open)
    elif not cmd and not shell:
        raise RequestError("a job needs a command: give it after --, or use --each-line")
    if not cmd and entries is None:
        raise RequestError("a job of shell lines ('shell' without 'cmd') needs 'entries'")
    res = get("res", {})
    if not (isinstance(res, dict) and all(
            isinstance(k, str) and RESOURCE_NAME.fullmatch(k) and k != "cpus"
            for k in res)):
        raise RequestError("'res' must map resource names (not cpus) to counts, "
                           f"not {brief(res)}")
    # a count of 0 asks for nothing: dropped, as a worker without that resource would
    # otherwise be handed a name it does not have
    res = {k: v for k, v in res.items() if check_int(v, f"res.{k}", 0, MAX_COUNT)}
    env = get("env", {})
    if not (isinstance(env, dict) and all(
            isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str)
            and "\0" not in v for k, v in env.items())):
        raise RequestError("'env' must map variable names (letters, digits, _) to strings "
                           "without NUL characters")
    cwd = _path_pattern(spec.get("cwd"), "cwd")
    stream = check_str(spec.get("stream"), "stream")
    if stream is not None:
        if not os.path.isabs(stream):
            raise RequestError(f"'stream' must be an absolute path (a directory), not "
                               f"{brief(stream)}")
        if spec.get("stdout") is not None or spec.get("stderr") is not None:
            raise RequestError("'stream' cannot be combined with 'stdout' or 'stderr': the "
                               "output of streamed tasks goes to the logs in its directory")
    if cwd and "%{CWD}" in cwd:
        raise RequestError("'cwd' cannot use %{CWD}: it defines it")
    checked = {
        "name": check_str(spec.get("name"), "name", nul_ok=True),
        "kind": kind,
        "cmd": cmd or None,
        "shell": shell,
        "ids": ids,
        "entries": entries,
        "cpus": check_int(get("cpus", 1), "cpus", 1, MAX_COUNT),
        "res": res,
        "priority": check_int(get("priority", 0), "priority", -MAX_COUNT, MAX_COUNT),
        "max_retries": check_int(get("max_retries", 0), "max_retries", 0, MAX_RETRIES),
        "crash_limit": check_int(get("crash_limit", 5), "crash_limit", 1, MAX_CRASH_LIMIT),
        "time_limit": check_seconds(spec.get("time_limit"), "time_limit"),
        "time_request": check_seconds(spec.get("time_request"), "time_request"),
        "retry_delay": _retry_delay(spec.get("retry_delay")),
        "retry_timeout": _positive_seconds(spec.get("retry_timeout"), "retry_timeout"),
        "stdout": _path_pattern(spec.get("stdout"), "stdout"),
        "stderr": _path_pattern(spec.get("stderr"), "stderr"),
        "cwd": cwd,
        "env": dict(env),
        "submit_dir": check_str(spec.get("submit_dir"), "submit_dir"),
        "unique": _unique_key(spec.get("unique")),
    }
    if is_open:  # only then: the specs of other jobs stay as they were
        checked["open"] = True
    if stream is not None:  # as "open"
        checked["stream"] = stream
    if function is not None:  # as "open"
        checked["function"] = function
    checked.update(_check_deps(spec, ids, is_open))  # as "open"
    checked.update(_task_extras(spec))
    return checked


def _check_deps(spec: dict, ids: list, is_open: bool) -> dict:
    """The dependency keys of a spec (``after``, ``after_any``, ``task_deps``: see
    :mod:`hpcqueue.deps`), only those given; ``after`` stays as sent (a selector or ids) until
    :func:`submit` resolves it against the jobs."""
    out: dict = {}
    try:
        after = deps.check_after(spec.get("after"))
        task_deps = spec.get("task_deps")
        if task_deps is not None and task_deps != []:
            if is_open:
                raise UsageError("an open job cannot have task dependencies: its tasks come "
                                 "later")
            out["task_deps"] = deps.check_task_deps(task_deps, IdRanges(ids))
    except UsageError as e:
        raise RequestError(str(e)) from None
    if after is not None:
        out["after"] = after
        if check_flag(spec, "after_any"):
            out["after_any"] = True
    elif check_flag(spec, "after_any"):
        raise RequestError("'after_any' needs 'after': the jobs to wait for")
    return out


def _resolve_after(core: Core, after) -> list[int]:
    """The job ids a spec's ``after`` names, each a job the server holds (a forgotten or
    never-submitted id is refused, naming it)."""
    jobs = core.state.jobs
    if isinstance(after, list):
        ids = after
    else:
        sel = _selector(after, "after")
        ids = sel.resolve(sorted(jobs))
        for lo, hi in sel.ranges:  # a range must name jobs only: no gap in it
            k = lo
            while k <= hi and k in jobs:
                k += 1
            if k <= hi:
                ids = [k]  # reported below
                break
    for job_id in ids:
        if job_id not in jobs:
            raise NotFound(f"--depends-on: no job {job_id} (never submitted, or forgotten): "
                           "`hpcqueue job list` shows the jobs")
    return sorted(set(ids))


#: what --task-dir may say in a spec: remove the folder always, or keep it if the task fails
TASK_DIR_MODES = ("remove", "keep-on-fail")


def _task_extras(spec: dict) -> dict:
    """The checked keys of --max-fails, --stdin and --task-dir, only those given (as
    "open")."""
    out: dict = {}
    if spec.get("max_fails") is not None:
        out["max_fails"] = check_int(spec["max_fails"], "max_fails", 1, MAX_TASKS_PER_JOB)
    stdin = spec.get("stdin")
    if stdin is not None:
        if not isinstance(stdin, bytes):
            raise RequestError(f"'stdin' must be bytes, not {brief(stdin)}")
        if len(stdin) > MAX_STDIN:
            raise RequestError(f"'stdin' holds {len(stdin):,} bytes; a job's stdin is at most "
                               f"{MAX_STDIN:,}: put it in a file the tasks read instead")
        out["stdin"] = stdin
    task_dir = spec.get("task_dir")
    if task_dir is not None:
        if task_dir not in TASK_DIR_MODES:
            raise RequestError(f"'task_dir' must be one of {', '.join(TASK_DIR_MODES)}, not "
                               f"{brief(task_dir)}")
        out["task_dir"] = task_dir
    return out


def _check_entries(entries) -> None:
    if not (isinstance(entries, list) and all(
            isinstance(e, str) and "\0" not in e for e in entries)):
        raise RequestError("'entries' must be a list of strings (without NUL characters)")


def _is_seconds(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value <= MAX_SECONDS)


def _positive_seconds(value, name: str) -> float | int | None:
    """None, or a number of seconds more than 0 and at most MAX_SECONDS."""
    if value is not None and not _is_seconds(value):
        raise RequestError(f"{name!r} must be a number of seconds more than 0 and at most "
                           f"{MAX_SECONDS:g}, not {brief(value)}")
    return value


def _retry_delay(value) -> list | None:
    """None, or [MIN, MAX] seconds with 0 < MIN <= MAX <= MAX_SECONDS."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_seconds, value))
            and value[0] <= value[1]):
        raise RequestError(f"'retry_delay' must be [MIN, MAX] seconds with 0 < MIN <= MAX <= "
                           f"{MAX_SECONDS:g}, not {brief(value)}")
    return list(value)


MAX_UNIQUE_KEY = 256  # characters of a --unique key


def _unique_key(value) -> str | None:
    value = check_str(value, "unique", nul_ok=True)
    if value is not None and not 0 < len(value) <= MAX_UNIQUE_KEY:
        raise RequestError(f"'unique' must be a key of 1 to {MAX_UNIQUE_KEY} characters")
    return value


# ------------------------------------------------------------------ jobs

@handler("submit")
def submit(core: Core, req: dict) -> dict:
    spec = check_spec(req.get("spec"))
    if "after" in spec:
        spec["after"] = _resolve_after(core, spec["after"])
    key = spec["unique"]
    if key is not None and key in core.state.unique:
        job = core.state.jobs[core.state.unique[key]]
        return {"job": job.id, "tasks": job.n, "existing": True}
    job = core.submit(spec)
    return {"job": job.id, "tasks": job.n, "existing": False}


@handler("append")
def append(core: Core, req: dict) -> dict:
    """More tasks for an open job: `entries`, which get the ids after its last."""
    job = _job(core, req.get("job"))
    entries = req.get("entries")
    _check_entries(entries)
    if not job.open:
        why = ("it was canceled" if job.canceled else "it was closed" if job.spec.get("open")
               else "it was not submitted open (`submit --each-line -` reading a pipe is)")
        raise RequestError(f"job {job.id} takes no more tasks: {why}")
    if job.n + len(entries) > MAX_TASKS_PER_JOB:
        raise RequestError(f"a job holds at most {MAX_TASKS_PER_JOB:,} tasks: job {job.id} "
                           f"has {job.n:,} and {len(entries):,} more do not fit; submit "
                           "another job")
    first = job.n
    if entries:
        core.record({"e": "append", "id": job.id, "entries": entries, "t": time.time()})
        # (not in core's event sets, so that they stay as they are: new work is here)
        core.schedule_dispatch()
        if core.autoalloc is not None:
            core.autoalloc.poke()
    return {"job": job.id, "tasks": job.n, "first": first}


@handler("close")
def close(core: Core, req: dict) -> dict:
    """An open job takes no more tasks; it ends when those it has have ended."""
    job = _job(core, req.get("job"))
    if not job.open:
        return {"job": job.id, "closed": False}
    core.record({"e": "close", "id": job.id, "t": time.time()})
    return {"job": job.id, "closed": True, "tasks": job.n}


PAGE_JOBS = 1000  # jobs a `jobs` page holds at most
SCAN_JOBS = 100_000  # jobs a filtered `jobs` page looks at, at most


def _page_args(req: dict, most: int) -> tuple[int, int]:
    """(after, limit) of a paged request: where to go on from, and how many rows at most."""
    after = req.get("after")
    after = 0 if after is None else check_int(after, "after", 0, MAX_TASK_ID)
    limit = req.get("limit")
    limit = most if limit is None else check_int(limit, "limit", 1, MAX_TASK_ID)
    return after, min(limit, most)


@handler("jobs")
def jobs(core: Core, req: dict) -> dict:
    """A page of jobs (those of the selector `jobs`, default all) with an id past `after`,
    `limit` at most; `next` is the `after` of the next page, or None at the end."""
    wanted = _states(req, "filter", JobState)
    after, limit = _page_args(req, PAGE_JOBS)
    ref = req.get("jobs")
    all_jobs = core.state.jobs
    ids = _job_ids(core, "all" if ref is None else ref)
    start = bisect_right(ids, after)
    rows, nxt = [], None
    for k in range(start, min(len(ids), start + SCAN_JOBS)):
        if len(rows) == limit:
            nxt = ids[k - 1]
            break
        row = all_jobs[ids[k]].summary()
        if not wanted or row["state"] in wanted:
            rows.append(row)
    else:
        if start + SCAN_JOBS < len(ids):
            nxt = ids[start + SCAN_JOBS - 1]
    return {"jobs": rows, "next": nxt}


@handler("job_info")
def job_info(core: Core, req: dict) -> dict:
    job = _job(core, req.get("job"))
    info = job.summary()
    # (not a function job's callable: base64 of a pickle, up to megabytes)
    spec = {k: v for k, v in job.spec.items()
            if k not in ("entries", "ids", "function", "stdin")}
    if "stdin" in job.spec:  # its size: the bytes themselves are the tasks'
        spec["stdin"] = f"{len(job.spec['stdin']):,} bytes"
    info.update(spec=spec, array=job.ids.spec(), mean_runtime=job.mean_runtime,
                errors=len(job.errors))
    if job.state is not None:
        # counted in C (array.count), not by a loop in Python: a million tasks take a few ms,
        # and the scan for the highest start only runs when some task started more than once
        starts = job.starts
        restarted = job.n - starts.count(0) - starts.count(1)
        info["restarted_tasks"] = restarted
        info["max_instance"] = max(starts) - 1 if restarted else 0
    why = explain.explain_job(job, *_explain_context(core), now=time.time())
    if why is not None and why.reason in explain.CANNOT_RUN:
        info["waiting_because"] = why.to_dict()
    return info


def _explain_context(core: Core) -> tuple[list, list, list]:
    """(connected workers, active allocation queues as (name, limits), jobs in dispatch
    order): what :mod:`hpcqueue.server.explain` decides from."""
    from hpcqueue.autoalloc.model import QueueState
    from hpcqueue.autoalloc.service import limits_of

    st = core.state
    workers = [st.workers[wid] for wid in core.live if wid in st.workers]
    queues = [(q.params.name or str(q.id), limits_of(q.params))
              for q in st.alloc.queues.values() if q.state is QueueState.ACTIVE]
    return workers, queues, st.ready_jobs()


@handler("task_explain")
def task_explain(core: Core, req: dict) -> dict:
    """Why a task is not running: see :func:`hpcqueue.server.explain.explain_task`."""
    job = _job(core, req.get("job"))
    i = _task_index(job, req.get("task"))
    why = explain.explain_task(job, i, *_explain_context(core), now=time.time())
    return {"job": job.id, "task": job.ids.id_at(i), **why.to_dict()}


@handler("cancel")
def cancel(core: Core, req: dict) -> dict:
    ids = [j for j in _job_ids(core, req.get("jobs")) if not core.state.jobs[j].done]
    if ids:
        core.cancel(ids)
    return {"canceled": ids}


@handler("forget")
def forget(core: Core, req: dict) -> dict:
    """Drop ended jobs from the state and (through a ``forget`` event) the journal.  `all`
    means every ended job; a selector that names an unfinished job is refused whole."""
    ref = req.get("jobs")
    ids = _job_ids(core, ref)
    jobs = core.state.jobs
    if ref == "all":
        ids = [j for j in ids if jobs[j].done]
    busy = [jobs[j] for j in ids if not jobs[j].done]
    if busy:
        job = busy[0]
        more = f" (and {len(busy) - 1} more unfinished)" if len(busy) > 1 else ""
        state = "open" if job.open else job.job_state().value
        raise RequestError(
            f"job {job.id} is {state}{more}: only ended jobs (finished, failed or canceled) "
            f"can be forgotten; cancel it (`hpcqueue job cancel {job.id}`) or wait for it "
            "first")
    if ids:
        core.record({"e": "forget", "ids": ids, "t": time.time()})
    return {"forgotten": ids}


@handler("tasks")
def tasks(core: Core, req: dict) -> dict:
    """A page of a job's tasks (see :func:`hpcqueue.listing.list_page`): those of the id
    selector `tasks` (default all) in a state of `filter`, from index `after`, `limit` at
    most.  The client asks again with `after` = the reply's `next` until it is None."""
    job = _job(core, req.get("job"))
    wanted = _states(req, "filter", TaskState)
    codes = [i for i, s in enumerate(STATE_CODES) if s.value in wanted] if wanted else None
    most = PAGE_ROWS_ENTRIES if job.entries is not None else PAGE_ROWS
    after, limit = _page_args(req, most)
    return list_page(job, _selected_spans(job, req), codes, after, limit)


def _selected_spans(job, req: dict):
    """The task index spans (see `task_spans`) of the id selector `tasks` of REQ (text, e.g.
    '1-100,200'), or None when it has none: every task."""
    selected = req.get("tasks")
    if selected is None:
        return None
    if not isinstance(selected, str):
        raise RequestError(f"'tasks' must be task ids as text (e.g. '1-100,200'), not "
                           f"{brief(selected)}")
    try:
        return task_spans(parse_tasks(selected), job.ids.ranges)
    except UsageError as e:
        raise RequestError(f"'tasks': {e}") from None


def _task_index(job, task_id) -> int:
    if not _is_int(task_id):
        raise RequestError(f"'task' must be a task id (a whole number), not {brief(task_id)}")
    i = job.ids.index_of(task_id)
    if i is None:
        raise NotFound(f"job {job.id} has no task {task_id} (its ids are {job.ids.spec()})")
    return i


@handler("task_info")
def task_info(core: Core, req: dict) -> dict:
    job = _job(core, req.get("job"))
    return {"job": job.id, "task": job.task_row(_task_index(job, req.get("task")))}


@handler("task_results")
def task_results(core: Core, req: dict) -> dict:
    """A page of the results of a function job's tasks (see
    :func:`hpcqueue.server.results.results_page`): those of the id selector `tasks`
    (default all) from index `after`, `limit` at most; again with `after` = `next` until it
    is None."""
    job = _job(core, req.get("job"))
    if job.spec.get("kind") != calls.KIND:
        raise RequestError(f"job {job.id} is not a job of Python calls: its tasks have no "
                           f"results (`hpcqueue job cat {job.id} stdout` shows their output)")
    after, limit = _page_args(req, PAGE_RESULTS)
    return results_page(job, _selected_spans(job, req), after, limit)


@handler("failed")
def failed(core: Core, req: dict) -> dict:
    job = _job(core, req.get("job"))
    out = []
    for i in job.indexes_in(STATE_CODES.index(TaskState.FAILED)):
        out.append({"id": job.ids.id_at(i),
                    "entry": job.entries[i] if job.entries is not None else None})
    return {"job": job.id, "failed": out}


def _in_spans(spans: list, i: int) -> bool:
    """Whether index I is in one of SPANS (sorted, disjoint (lo, hi) pairs)."""
    k = bisect_right(spans, (i, float("inf"))) - 1
    return k >= 0 and spans[k][0] <= i <= spans[k][1]


@handler("cat")
def cat(core: Core, req: dict) -> dict:
    """Where a job's tasks wrote a stream, for the client to read: the files of the tasks
    that started (resolved), or the directory of a streamed job's logs (`--stream`).
    'failed': only the failed tasks (for a streamed job, their ids come back as 'failed')."""
    job = _job(core, req.get("job"))
    stream = req.get("stream")
    if not isinstance(stream, str) or stream not in ("stdout", "stderr"):
        raise RequestError(f"'stream' must be stdout or stderr, not {brief(stream)}")
    one = req.get("task")
    if one is not None:
        spans = [(_task_index(job, one),) * 2]
    else:
        spans = _selected_spans(job, req)
    if spans is None:
        spans = [(0, job.n - 1)] if job.n else []
    spec = job.spec
    if check_flag(req, "failed"):
        failed = job.indexes_in(STATE_CODES.index(TaskState.FAILED))
        indexes = sorted(i for i in failed if _in_spans(spans, i))
        if spec.get("stream"):
            return {"job": job.id, "dir": os.path.join(spec["stream"], f"job-{job.id}"),
                    "failed": [job.ids.id_at(i) for i in indexes]}
    else:
        if spec.get("stream"):
            return {"job": job.id, "dir": os.path.join(spec["stream"], f"job-{job.id}")}
        indexes = chain.from_iterable(range(lo, hi + 1) for lo, hi in spans)
    template = spec.get(stream)
    if not template or template in ("none", "inherit"):
        raise RequestError(f"job {job.id} did not keep its {stream} (it was {template or 'none'})")
    every = check_flag(req, "all_instances") and "%{INSTANCE_ID}" in (
        template + (spec.get("cwd") or ""))
    out = []
    cwd_t = spec.get("cwd") or "%{SUBMIT_DIR}"
    for i in indexes:
        if job.state is None or job.starts[i] == 0:
            continue
        task_id = job.ids.id_at(i)
        entry = job.entries[i] if job.entries is not None else None
        last = job.starts[i] - 1
        for instance in range(last + 1) if every else (last,):
            values = {"JOB_ID": job.id, "TASK_ID": task_id, "INSTANCE_ID": instance,
                      "SUBMIT_DIR": spec.get("submit_dir") or "",
                      "HASH": lambda t=task_id, e=entry: param_hash(spec.get("kind"),
                                                                    spec.get("cmd"), t, e)}
            values["CWD"] = fill_placeholders(cwd_t, values)
            path = fill_placeholders(template, values)
            out.append([task_id, os.path.join(values["CWD"], path)])
    return {"job": job.id, "files": out}


# ------------------------------------------------------------------ workers

@handler("workers")
def workers(core: Core, req: dict) -> dict:
    rows = [w.summary() for w in core.state.workers.values()]
    if not check_flag(req, "all"):
        rows = [r for r in rows if r["state"] == "running"]
    return {"workers": rows}


@handler("worker_info")
def worker_info(core: Core, req: dict) -> dict:
    ref = req.get("worker")
    if not _is_int(ref):
        raise RequestError(f"'worker' must be a worker id, not {brief(ref)}")
    w = core.state.workers.get(ref)
    if w is None:
        raise NotFound(f"no worker {ref}: `hpcqueue worker list` shows them")
    info = w.summary()
    info["info"] = w.info
    info["tasks"] = sorted([j, w_id] for j, w_id in w.tasks)
    return info


@handler("worker_stop")
def worker_stop(core: Core, req: dict) -> dict:
    ref = req.get("workers")
    if ref != "all" and not (isinstance(ref, list) and all(_is_int(r) for r in ref)):
        raise RequestError(f"'workers' must be 'all' or a list of worker ids, not {brief(ref)}")
    ids = sorted(core.live) if ref == "all" else sorted({r for r in ref if r in core.live})
    missing = [] if ref == "all" else [r for r in ref if r not in core.live]
    if missing:
        raise NotFound(f"no running worker {', '.join(map(str, missing))}")
    for wid in ids:
        core.send(core.live[wid], {"op": "stop", "reason": "stopped by `worker stop`"})
    return {"stopping": ids}


# ------------------------------------------------------------------ server

@handler("server_info")
def server_info(core: Core, req: dict) -> dict:
    st = core.state
    info = dict(core.info)
    info.update(
        now=time.time(), jobs=len(st.jobs), workers=len(core.live),
        # tasks that may run now; retries waiting out a --retry-delay are counted apart
        waiting=sum(j.available for j in st.ready.values()),
        delayed=sum(len(j.retry_at) for j in st.jobs.values() if j.retry_at),
        journal=core.journal.path if core.journal is not None else None,
        journal_bytes=core.journal.bytes_written if core.journal is not None else None,
    )
    return info


@handler("journal_flush")
def journal_flush(core: Core, req: dict) -> dict:
    if core.journal is None:
        raise RequestError("this server runs without a journal (start it with --journal PATH)")
    core.journal.sync()
    return {"journal": core.journal.path}
