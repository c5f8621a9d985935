"""Request handlers: one function per client operation.

A handler gets the core and the request (a dict from the network, so nothing
in it is trusted) and returns the reply's fields.  A bad request raises
:class:`RequestError`, which becomes ``{"ok": False, "error": ...}``: the
connection and everything already accepted stay as they were.
"""

from __future__ import annotations

import os
import time

from hpcqueue.exceptions import NotFound, RequestError
from hpcqueue.model import STATE_CODES, MAX_TASKS_PER_JOB, TaskState, fill_placeholders
from hpcqueue.server.core import Core

HANDLERS = {}


def handler(name):
    def register(fn):
        HANDLERS[name] = fn
        return fn
    return register


# ------------------------------------------------------------------ checks

def _int(req: dict, key: str, default=None, low=None) -> int:
    value = req.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{key!r} must be a whole number, not {value!r}")
    if low is not None and value < low:
        raise RequestError(f"{key!r} must be at least {low}, not {value}")
    return value


def _job(core: Core, ref):
    jobs = core.state.jobs
    if ref == "last":
        if not jobs:
            raise NotFound("there are no jobs yet")
        return jobs[max(jobs)]
    if not isinstance(ref, int) or ref not in jobs:
        raise NotFound(f"no job {ref}: `hpcqueue job list` shows the jobs")
    return jobs[ref]


def _job_ids(core: Core, ref) -> list[int]:
    if ref == "all":
        return sorted(core.state.jobs)
    if isinstance(ref, list):
        return [_job(core, r).id for r in ref]
    return [_job(core, ref).id]


def check_spec(spec) -> dict:
    """Validate a job spec from the network into the shape the state expects."""
    if not isinstance(spec, dict):
        raise RequestError("the job spec must be a map")
    cmd = spec.get("cmd")
    shell = bool(spec.get("shell"))
    if cmd is not None and not (isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)):
        raise RequestError("'cmd' must be a list of strings")
    if not cmd and not shell:
        raise RequestError("a job needs a command: give it after --, or use --each-line")
    ids = spec.get("ids")
    if not (isinstance(ids, list) and ids and all(
            isinstance(r, list) and len(r) == 3 and all(isinstance(x, int) for x in r)
            and r[0] >= 0 and r[1] >= r[0] and r[2] >= 1 for r in ids)):
        raise RequestError("'ids' must be a list of [start, stop, step] ranges")
    entries = spec.get("entries")
    total = sum((b - a) // s + 1 for a, b, s in ids)
    if total > MAX_TASKS_PER_JOB:
        raise RequestError(f"a job holds at most {MAX_TASKS_PER_JOB:,} tasks, not {total:,}")
    if entries is not None:
        if not (isinstance(entries, list) and all(isinstance(e, str) for e in entries)):
            raise RequestError("'entries' must be a list of strings")
        if len(entries) != total:
            raise RequestError("'entries' and 'ids' differ in length")
    for key in ("cpus",):
        _int(spec, key, 1, low=1)
    for key in ("priority", "max_retries", "crash_limit"):
        if key in spec:
            _int(spec, key, low=None if key == "priority" else 0)
    res = spec.get("res") or {}
    if not (isinstance(res, dict) and all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in res.items())):
        raise RequestError("'res' must map resource names to counts")
    for key in ("time_limit", "time_request"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, (int, float)) or v < 0):
            raise RequestError(f"{key!r} must be a number of seconds")
    env = spec.get("env") or {}
    if not (isinstance(env, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise RequestError("'env' must map names to strings")
    for key in ("name", "stdout", "stderr", "cwd", "submit_dir"):
        v = spec.get(key)
        if v is not None and not isinstance(v, str):
            raise RequestError(f"{key!r} must be a string")
    return spec


# ------------------------------------------------------------------ jobs

@handler("submit")
def submit(core: Core, req: dict) -> dict:
    spec = check_spec(req.get("spec"))
    job = core.submit(spec)
    return {"job": job.id, "tasks": job.n}


@handler("jobs")
def jobs(core: Core, req: dict) -> dict:
    wanted = req.get("filter") or []
    rows = [j.summary() for j in core.state.jobs.values()]
    if wanted:
        rows = [r for r in rows if r["state"] in wanted]
    return {"jobs": rows}


@handler("job_info")
def job_info(core: Core, req: dict) -> dict:
    job = _job(core, req.get("job"))
    info = job.summary()
    spec = {k: v for k, v in job.spec.items() if k not in ("entries", "ids")}
    info.update(spec=spec, array=job.ids.spec(), mean_runtime=job.mean_runtime,
                errors=len(job.errors))
    if job.state is not None:
        starts = job.starts
        info["max_instance"] = max(starts) - 1 if job.n else 0
        info["restarted_tasks"] = sum(1 for s in starts if s > 1)
    return info


@handler("cancel")
def cancel(core: Core, req: dict) -> dict:
    ids = [j for j in _job_ids(core, req.get("jobs")) if not core.state.jobs[j].done]
    if ids:
        core.cancel(ids)
    return {"canceled": ids}


@handler("tasks")
def tasks(core: Core, req: dict) -> dict:
    job = _job(core, req.get("job"))
    wanted = req.get("filter") or []
    codes = [i for i, s in enumerate(STATE_CODES) if s.value in wanted] if wanted else None
    if codes is None:
        rows = [job.task_row(i) for i in range(job.n)]
    else:
        rows = [job.task_row(i) for c in codes for i in job.indexes_in(c)]
        rows.sort(key=lambda r: r["id"])
    return {"job": job.id, "tasks": rows}


def _task_index(job, task_id) -> int:
    if not isinstance(task_id, int):
        raise RequestError(f"a task id is a whole number, not {task_id!r}")
    i = job.ids.index_of(task_id)
    if i is None:
        raise NotFound(f"job {job.id} has no task {task_id} (its ids are {job.ids.spec()})")
    return i


@handler("task_info")
def task_info(core: Core, req: dict) -> dict:
    job = _job(core, req.get("job"))
    return {"job": job.id, "task": job.task_row(_task_index(job, req.get("task")))}


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
    """The files a job's tasks wrote for a stream, resolved for the client to read."""
    job = _job(core, req.get("job"))
    stream = req.get("stream")
    if stream not in ("stdout", "stderr"):
        raise RequestError("the stream is stdout or stderr")
    template = job.spec.get(stream)
    if not template or template in ("none", "inherit"):
        raise RequestError(f"job {job.id} did not keep its {stream} (it was {template or 'none'})")
    indexes = range(job.n) if req.get("task") is None else [_task_index(job, req.get("task"))]
    out = []
    cwd_t = job.spec.get("cwd") or "%{SUBMIT_DIR}"
    for i in indexes:
        if job.state is None or job.starts[i] == 0:
            continue
        values = {"JOB_ID": job.id, "TASK_ID": job.ids.id_at(i),
                  "INSTANCE_ID": job.starts[i] - 1, "SUBMIT_DIR": job.spec.get("submit_dir", "")}
        values["CWD"] = fill_placeholders(cwd_t, values)
        path = fill_placeholders(template, values)
        out.append([values["TASK_ID"], os.path.join(values["CWD"], path)])
    return {"job": job.id, "files": out}


# ------------------------------------------------------------------ workers

@handler("workers")
def workers(core: Core, req: dict) -> dict:
    rows = [w.summary() for w in core.state.workers.values()]
    if not req.get("all"):
        rows = [r for r in rows if r["state"] == "running"]
    return {"workers": rows}


@handler("worker_info")
def worker_info(core: Core, req: dict) -> dict:
    w = core.state.workers.get(req.get("worker"))
    if w is None:
        raise NotFound(f"no worker {req.get('worker')}: `hpcqueue worker list` shows them")
    info = w.summary()
    info["info"] = w.info
    info["tasks"] = sorted([j, w_id] for j, w_id in w.tasks)
    return info


@handler("worker_stop")
def worker_stop(core: Core, req: dict) -> dict:
    ref = req.get("workers")
    ids = sorted(core.live) if ref == "all" else [r for r in (ref or []) if r in core.live]
    missing = [] if ref == "all" else [r for r in (ref or []) if r not in core.live]
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
        waiting=sum(j.waiting for j in st.ready.values()),
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
