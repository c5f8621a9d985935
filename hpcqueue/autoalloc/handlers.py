"""Server request handlers for `hpcqueue alloc ...`."""

from __future__ import annotations

import time

from hpcqueue.autoalloc import policy
from hpcqueue.autoalloc.model import QueueParams, QueueState
from hpcqueue.autoalloc.service import demand_of, dry_run, in_flight, limits_of
from hpcqueue.exceptions import NotFound, RequestError
from hpcqueue.server.handlers import handler


def _queue(core, ref, removed_too: bool = False):
    """A queue by id or name; a removed one only where asked (to look at, not to change)."""
    found = [q for q in core.state.alloc.queues.values()
             if ref == q.id or (isinstance(ref, str) and ref == q.params.name)]
    found.sort(key=lambda q: (q.state is QueueState.REMOVED, -q.id))
    if found and (removed_too or found[0].state is not QueueState.REMOVED):
        return found[0]
    raise NotFound(f"no allocation queue {ref}: `hpcqueue alloc list` shows them")


@handler("alloc_add")
async def alloc_add(core, req: dict) -> dict:
    raw = req.get("params")
    if not isinstance(raw, dict):
        raise RequestError("'params' must be a map")
    try:
        params = QueueParams.from_dict(raw).validate()
    except TypeError as e:
        raise RequestError(f"bad queue parameters: {e}") from None
    book = core.state.alloc
    if params.name and any(q.params.name == params.name and q.state is not QueueState.REMOVED
                           for q in book.queues.values()):
        raise RequestError(f"there is already a queue named {params.name!r}")
    script = None
    if req.get("dry_run", True):
        script = await dry_run(params, core.autoalloc.server_dir,
                               transport=core.autoalloc.backend(params)[1])
    queue_id = book.next_queue_id
    core.record({"e": "aq_add", "id": queue_id, "params": params.to_dict(), "t": time.time()})
    core.autoalloc.poke()
    return {"queue": queue_id, "script": script}


@handler("alloc_list")
def alloc_list(core, req: dict) -> dict:
    queues = [q.summary() for q in core.state.alloc.queues.values()
              if req.get("all") or q.state is not QueueState.REMOVED]
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
    force = bool(req.get("force"))
    cancelled = await core.autoalloc.cancel_all(q) if force else []
    core.record({"e": "aq_remove", "id": q.id, "force": force, "t": time.time()})
    return {"queue": q.id, "state": q.state.value, "cancelled": cancelled,
            "draining": [a.id for a in q.live()] if not force else []}


@handler("alloc_explain")
def alloc_explain(core, req: dict) -> dict:
    q = _queue(core, req.get("queue"), removed_too=True)
    now = policy.decide(demand_of(core.state), limits_of(q.params), in_flight(q))
    return {
        "queue": q.id, "state": q.state.value, "pause_reason": q.pause_reason,
        "now": {"submit": now.submit, "reason": now.reason, "unfit": now.unfit},
        "decisions": [{"t": t, "submit": n, "reason": r, "unfit": u}
                      for t, n, r, u in q.decisions],
    }


@handler("alloc_log")
def alloc_log(core, req: dict) -> dict:
    ref = req.get("alloc")
    a = core.state.alloc.by_id.get(ref) if isinstance(ref, str) else None
    if a is None:
        raise NotFound(f"no allocation {ref}: `hpcqueue alloc info QUEUE` lists them (ids look "
                       "like 1.3)")
    stream = req.get("stream")
    if stream not in ("stdout", "stderr", "script"):
        raise RequestError("the stream is stdout, stderr or script")
    return {"path": f"{a.dir}/{'job.sh' if stream == 'script' else stream}"}
