"""Server request handlers for `hpcqueue alloc ...`."""

from __future__ import annotations

import time
from dataclasses import MISSING, fields

from hpcqueue.autoalloc import backends, policy
from hpcqueue.autoalloc.model import MAX_STATUS_ERRORS, AllocState, QueueParams, QueueState
from hpcqueue.autoalloc.service import demand_of, dry_run, in_flight, limits_of
from hpcqueue.exceptions import NotFound, RequestError, UsageError
from hpcqueue.model import ENV_NAME, MAX_COUNT
from hpcqueue.server.checks import brief, check_flag, check_int, check_seconds, check_str
from hpcqueue.server.handlers import handler


def _queue(core, ref, removed_too: bool = False):
    """A queue by id or name; a removed one only where asked (to look at, not to change)."""
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise RequestError(f"'queue' must be a queue id or name, not {brief(ref)}")
    found = [q for q in core.state.alloc.queues.values()
             if ref == q.id or (isinstance(ref, str) and ref == q.params.name)]
    found.sort(key=lambda q: (q.state is QueueState.REMOVED, -q.id))
    if found and (removed_too or found[0].state is not QueueState.REMOVED):
        return found[0]
    if found:  # only a removed one: say so, rather than that there is none
        raise NotFound(f"allocation queue {ref} was removed: `hpcqueue alloc info {ref}` "
                       "still shows it; `hpcqueue alloc list` shows the live ones")
    raise NotFound(f"no allocation queue {ref}: `hpcqueue alloc list` shows them")


def _count(low: int):
    def check(v, name):
        return check_int(v, name, low, MAX_COUNT)
    return check


def _str_list(v, name):
    if not (isinstance(v, list) and all(isinstance(x, str) and "\0" not in x for x in v)):
        raise RequestError(f"{name!r} must be a list of strings, not {brief(v)}")
    return v


def _str_map(v, name):
    if not (isinstance(v, dict) and all(
            isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(x, str)
            and "\0" not in x for k, x in v.items())):
        raise RequestError(f"{name!r} must map variable names to strings, not {brief(v)}")
    return v


def _address(v, name):
    if not (isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("hostname", "interface")
            and isinstance(next(iter(v.values())), str)):
        raise RequestError(f"{name!r} must be {{hostname: NAME}} or {{interface: IFACE}}")
    return v


def _choice(names):
    """A check that a value is one of NAMES() (called when checking: the registry)."""
    def check(v, name):
        options = names()
        if not isinstance(v, str) or v not in options:
            raise RequestError(f"{name!r} must be one of {', '.join(sorted(options))}, "
                               f"not {brief(v)}")
        return v
    return check


#: how each QueueParams field is checked (None is its default); a new field needs a line here
PARAM_CHECKS = {
    "scheduler": _choice(backends.scheduler_names), "time_limit": check_seconds,
    "name": check_str, "backlog": _count(1), "workers_per_alloc": _count(1),
    "max_worker_count": _count(1), "idle_timeout": check_seconds, "partition": check_str,
    "account": check_str, "qos": check_str, "cpus": _count(1), "gpus": _count(0),
    "mem": check_str, "worker_start_cmd": check_str, "worker_stop_cmd": check_str,
    "template": check_str, "extra_args": _str_list,
    "transport": _choice(lambda: list(backends.TRANSPORTS)), "pause_after": _count(1),
    "keep_dirs": _count(0), "modules": _str_list, "env": _str_map, "profile": check_str,
    "login_host": check_str, "template_text": check_str, "server_address": _address,
    "server_host": check_str,
    "target_drain": check_seconds,
}


def check_params(raw) -> QueueParams:
    """Queue parameters from the network: each field's type and range, then the
    checks `alloc add` makes (QueueParams.validate)."""
    if not isinstance(raw, dict):
        raise RequestError(f"'params' must be a map, not {brief(raw)}")
    values = {}
    for f in fields(QueueParams):
        v = raw.get(f.name)
        if v is None:
            if f.default is MISSING and f.default_factory is MISSING:
                raise RequestError(f"'params' needs {f.name!r}")
            continue
        values[f.name] = PARAM_CHECKS[f.name](v, f.name)
    try:
        return QueueParams(**values).validate()
    except UsageError as e:
        raise RequestError(str(e)) from None


@handler("alloc_add")
async def alloc_add(core, req: dict) -> dict:
    params = check_params(req.get("params"))
    dry = req.get("dry_run", True)
    if not isinstance(dry, bool):
        raise RequestError(f"'dry_run' must be true or false, not {brief(dry)}")
    book = core.state.alloc
    if params.name and any(q.params.name == params.name and q.state is not QueueState.REMOVED
                           for q in book.queues.values()):
        raise RequestError(f"there is already a queue named {params.name!r}")
    script = probe = None
    if dry:
        script = await dry_run(params, core.autoalloc.server_dir,
                               transport=core.autoalloc.backend(params)[1])
        probe = await core.autoalloc.probe(params)
    queue_id = book.next_queue_id
    core.record({"e": "aq_add", "id": queue_id, "params": params.to_dict(), "t": time.time()})
    core.autoalloc.poke()
    return {"queue": queue_id, "script": script, "probe": probe}


@handler("alloc_probe")
def alloc_probe(core, req: dict) -> dict:
    """A node of a reach probe job connected back (autoalloc/probe.py)."""
    token = check_str(req.get("token"), "token")
    hostname = check_str(req.get("hostname"), "hostname")
    if not token or hostname is None:
        raise RequestError("'token' and 'hostname' must be given")
    core.autoalloc.probe_arrived(token, hostname)
    return {}


@handler("alloc_list")
def alloc_list(core, req: dict) -> dict:
    show_all = check_flag(req, "all")
    queues = [q.summary() for q in core.state.alloc.queues.values()
              if show_all or q.state is not QueueState.REMOVED]
    return {"queues": queues}


@handler("alloc_info")
def alloc_info(core, req: dict) -> dict:
    q = _queue(core, req.get("queue"), removed_too=True)
    info = q.summary()
    info["allocations"] = [a.summary() for a in q.allocations.values()]
    return info


@handler("alloc_pause")
def alloc_pause(core, req: dict) -> dict:
    q = _queue(core, req.get("queue"))
    core.record({"e": "aq_pause", "id": q.id, "reason": "paused by `alloc pause`",
                 "t": time.time()})
    return {"queue": q.id, "state": q.state.value}


@handler("alloc_resume")
def alloc_resume(core, req: dict) -> dict:
    q = _queue(core, req.get("queue"))
    core.record({"e": "aq_resume", "id": q.id, "t": time.time()})
    core.autoalloc.poke()
    return {"queue": q.id, "state": q.state.value}


@handler("alloc_remove")
async def alloc_remove(core, req: dict) -> dict:
    q = _queue(core, req.get("queue"))
    force = req.get("force") or False
    if not isinstance(force, bool):
        raise RequestError(f"'force' must be true or false, not {brief(force)}")
    cancelled = await core.autoalloc.cancel_all(q) if force else []
    core.record({"e": "aq_remove", "id": q.id, "force": force, "t": time.time()})
    return {"queue": q.id, "state": q.state.value, "cancelled": cancelled,
            "draining": [a.id for a in q.live()] if not force else []}


@handler("alloc_edit")
async def alloc_edit(core, req: dict) -> dict:
    """Change editable options of a live queue (the table: hpcqueue/autoalloc/options.py):
    the next cycle uses them, allocations already submitted keep their script.  A change of
    an option marked DRY_RUN (the time limit) is tried on the scheduler first."""
    from hpcqueue.autoalloc.options import DRY_RUN, EDITABLE

    q = _queue(core, req.get("queue"))
    if q.state is QueueState.DRAINING:
        raise RequestError(f"queue {q.id} is being removed: it submits nothing more")
    changes = req.get("changes")
    editable = {o.field: o for o in EDITABLE}
    names = ", ".join(o.flag_name for o in EDITABLE)
    if not isinstance(changes, dict) or not changes:
        raise RequestError(f"'changes' must map options to new values ({names})")
    dry = req.get("dry_run", True)
    if not isinstance(dry, bool):
        raise RequestError(f"'dry_run' must be true or false, not {brief(dry)}")
    values = {}
    for name, value in changes.items():
        if name not in editable:
            raise RequestError(f"{brief(name)} cannot be changed on a live queue: the options "
                               f"`alloc edit` changes are {names} (for others, add a new queue)")
        if value is None:
            raise RequestError(f"{name!r} needs a value")
        values[name] = PARAM_CHECKS[name](value, name)
    old = q.params.to_dict()
    values = {k: v for k, v in values.items() if old[k] != v}
    try:
        new = QueueParams.from_dict({**old, **values}).validate()
    except UsageError as e:
        raise RequestError(str(e)) from None
    tried = dry and any(editable[k].edit == DRY_RUN for k in values)
    if tried:
        await dry_run(new, core.autoalloc.server_dir, transport=core.autoalloc.backend(new)[1])
        q = _queue(core, q.id)  # still there after the dry run
        old = q.params.to_dict()
    if values:
        core.record({"e": "aq_edit", "id": q.id, "changes": values, "t": time.time()})
        core.autoalloc.poke()
    return {"queue": q.id, "changed": {k: [old[k], v] for k, v in values.items()},
            "dry_run": tried}


@handler("alloc_explain")
def alloc_explain(core, req: dict) -> dict:
    q = _queue(core, req.get("queue"), removed_too=True)
    now = policy.decide(demand_of(core.state), limits_of(q.params), in_flight(q))
    errors = core.autoalloc.status_errors
    return {
        "queue": q.id, "state": q.state.value, "pause_reason": q.pause_reason,
        "now": {"submit": now.submit, "reason": now.reason, "unfit": now.unfit},
        "decisions": [{"t": t, "submit": n, "reason": r, "unfit": u}
                      for t, n, r, u in q.decisions],
        # allocations whose status reads fail, and those given up after MAX_STATUS_ERRORS
        "status_errors": [{"id": a.id, "job_id": a.job_id, "count": errors[a.id][0],
                           "limit": MAX_STATUS_ERRORS, "error": errors[a.id][1]}
                          for a in q.live() if a.id in errors],
        "unknown": [{"id": a.id, "job_id": a.job_id, "t": a.ended, "reason": a.reason}
                    for a in q.allocations.values() if a.state is AllocState.UNKNOWN],
        # what `alloc edit` changed: field -> [old, new]
        "edits": [{"t": t, "changes": changed} for t, changed in q.edits],
    }


@handler("alloc_efficiency")
def alloc_efficiency(core, req: dict) -> dict:
    """Core-hours allocated and used, per allocation and queue (autoalloc/efficiency.py):
    one queue by id or name (a removed one too), or every queue not removed."""
    from hpcqueue.autoalloc.efficiency import queue_figures

    ref = req.get("queue")
    if ref is None:
        queues = [q for q in core.state.alloc.queues.values()
                  if q.state is not QueueState.REMOVED]
    else:
        queues = [_queue(core, ref, removed_too=True)]
    now = time.time()
    return {"queues": [queue_figures(q, now) for q in queues]}


@handler("alloc_log")
def alloc_log(core, req: dict) -> dict:
    ref = req.get("alloc")
    a = core.state.alloc.by_id.get(ref) if isinstance(ref, str) else None
    if a is None:
        raise NotFound(f"no allocation {ref}: `hpcqueue alloc info QUEUE` lists them (ids look "
                       "like 1.3)")
    stream = req.get("stream")
    if not isinstance(stream, str) or stream not in ("stdout", "stderr", "script"):
        raise RequestError(f"'stream' must be stdout, stderr or script, not {brief(stream)}")
    return {"path": f"{a.dir}/{'job.sh' if stream == 'script' else stream}"}
