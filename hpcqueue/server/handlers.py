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

from hpcqueue import calls
from hpcqueue.exceptions import NotFound, RequestError, UsageError
from hpcqueue.listing import PAGE_ROWS, PAGE_ROWS_ENTRIES, list_page
from hpcqueue.model import (
    MAX_TASK_ID,
    MAX_TASKS_PER_JOB,
    STATE_CODES,
    JobState,
    TaskState,
    fill_placeholders,
    param_hash,
)
from hpcqueue.selectors import in_spans, parse_jobs, parse_tasks, task_spans
from hpcqueue.server import explain
from hpcqueue.server.core import Core
from hpcqueue.server.results import PAGE_RESULTS, results_page
from hpcqueue.server.checks import _is_int, brief, check_flag, check_int
from hpcqueue.server.specs import _check_entries, check_spec

HANDLERS = {}


def handler(name):
    def register(fn):
        HANDLERS[name] = fn
        return fn
    return register


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
        indexes = sorted(i for i in failed if in_spans(spans, i))
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
