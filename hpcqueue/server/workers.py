"""The server's side of a worker connection: register, take results, lose it."""

from __future__ import annotations

import logging
import time

from hpcqueue.exceptions import ProtocolError
from hpcqueue.jobs import EXIT_MAX, EXIT_MIN
from hpcqueue.model import MAX_COUNT, MAX_SECONDS
from hpcqueue.protocol import read_message
from hpcqueue.server.core import Core, Peer
from hpcqueue.server.results import check_outputs

log = logging.getLogger("hpcqueue.server")

#: what a worker's hello may say of itself: key -> kind ("n": a count, "s": seconds)
_INFO_KEYS = {
    "hostname": str, "pid": "n", "cpus": "n", "res": dict, "batch_job": str,
    "remaining": "s", "version": str, "idle_timeout": "s", "time_limit": "s",
    "manager": str, "group": str, "alloc": str, "res_idx": dict,
}
_INF = float("inf")
_NUMBER = (int, float)


def _check_info(info) -> dict:
    """The known keys of a worker's hello, checked; the rest is dropped."""
    if not isinstance(info, dict):
        raise ProtocolError("worker hello without info")
    out = {}
    for key, kind in _INFO_KEYS.items():
        value = info.get(key)
        if value is None:
            continue
        if kind == "n":
            ok = type(value) is int and 0 <= value <= MAX_COUNT
        elif kind == "s":
            ok = type(value) in (int, float) and 0 <= value <= MAX_SECONDS
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ProtocolError(f"worker hello: {key!r} is not a valid value ({value!r:.60})")
        out[key] = value
    if out.get("cpus", 1) < 1:
        raise ProtocolError("worker hello: cpus must be at least 1")
    res = out.get("res") or {}
    if not all(isinstance(k, str) and type(v) is int and 0 <= v <= MAX_COUNT
               for k, v in res.items()):
        raise ProtocolError("worker hello: resources must map names to counts")
    for name, idx in (out.get("res_idx") or {}).items():  # indexed resources: gpus=[0,1]
        if not (type(idx) is list and res.get(name) == len(idx)
                and all(type(i) is int and 0 <= i <= MAX_COUNT for i in idx)):
            raise ProtocolError(f"worker hello: the indices of {name!r} must be a list of "
                                "as many whole numbers as its count")
    return out


def forgotten(core: Core, job_id) -> bool:
    """Whether JOB_ID is a job the server had and forgot (`job forget`): a worker may still
    report on it (the tasks of a canceled job end after it is forgotten), and that is no
    fault of the worker's.  Job ids are never reused."""
    return type(job_id) is int and 0 < job_id < core.state.next_job_id \
        and job_id not in core.state.jobs


def _check_results(core: Core, rows) -> list:
    """Result rows [job, index, instance, exit, t0, t1, msg], checked; an exit code
    beyond the exit column is clamped to it (it keeps its sign, so a failure stays one).
    Rows of forgotten jobs are dropped."""
    jobs = core.state.jobs
    if type(rows) is not list:
        raise ProtocolError("results must be a list")
    dropped = False
    for row in rows:
        if type(row) is not list or len(row) != 7:
            raise ProtocolError("a result must have 7 fields")
        job_id, i, inst, code, t0, t1, msg = row
        # type() first: a list is unhashable, and a bool or a str does not compare as a number
        job = jobs.get(job_id) if type(job_id) is int else None
        if job is None and forgotten(core, job_id):
            dropped = True  # (looked at only for a job not held: off the common path)
            continue
        if (job is None or type(i) is not int or not 0 <= i < job.n
                or type(inst) is not int or type(code) is not int
                or type(t0) not in _NUMBER or type(t1) not in _NUMBER
                or not 0 <= t0 < _INF or not 0 <= t1 < _INF
                or not (msg is None or type(msg) is str)):
            raise ProtocolError(f"malformed result {row!r:.200}")
        if not EXIT_MIN <= code <= EXIT_MAX:
            row[3] = EXIT_MAX if code > 0 else EXIT_MIN
    if dropped:
        rows = [row for row in rows if row[0] in jobs]
    return rows


def _check_tasks(core: Core, tasks) -> list:
    jobs = core.state.jobs
    if type(tasks) is not list or len(tasks) % 2:
        raise ProtocolError("a task list must be [job, [index, ...], ...]")
    for k in range(0, len(tasks), 2):
        job_id = tasks[k]
        job = jobs.get(job_id) if type(job_id) is int else None
        idxs = tasks[k + 1]
        if job is None and forgotten(core, job_id) and type(idxs) is list:
            continue  # (the state skips a job it does not hold)
        if job is None or type(idxs) is not list or not all(
                type(i) is int and 0 <= i < job.n for i in idxs):
            raise ProtocolError("a task list names an unknown job or task")
    return tasks


async def worker_session(core: Core, peer: Peer, hello: dict, heartbeat: float) -> None:
    info = _check_info(hello.get("info"))
    now = time.time()
    remaining = info.pop("remaining", None)
    if remaining is not None:
        info["deadline"] = now + remaining
    wid = core.state.next_worker_id
    core.record({"e": "worker", "id": wid, "info": info, "t": now})
    peer.worker_id = wid
    core.live[wid] = peer
    core.liveness.add(wid, time.monotonic())
    log.info("worker %d connected from %s (%s, %d cpus%s)", wid, peer.addr,
             info.get("hostname"), info.get("cpus", 1),
             f", batch job {info['batch_job']}" if info.get("batch_job") else "")
    core.send(peer, {"op": "welcome", "id": wid, "heartbeat": heartbeat,
                     "server_id": core.info.get("server_id"),
                     "result_limit": core.result_limit})
    core.schedule_dispatch()
    reader, session = peer.reader, peer.session
    last_seen = core.liveness.last
    while True:
        msg = await read_message(reader, session)
        if wid in last_seen:  # (not once it was declared lost)
            last_seen[wid] = time.monotonic()
        if not isinstance(msg, dict):
            raise ProtocolError("a worker message must be a map")
        op = msg.get("op")
        if op == "done":
            event = {"e": "done", "w": wid, "r": _check_results(core, msg.get("r")),
                     "t": time.time()}
            out = msg.get("o")
            if out is not None:  # results of function tasks (hpcqueue.calls)
                event["o"] = check_outputs(core.state.jobs, out, core.result_limit,
                                           core.server_dir, lambda j: forgotten(core, j))
            core.record(event)
        elif op == "back":
            core.record({"e": "back", "w": wid, "tasks": _check_tasks(core, msg.get("tasks")),
                         "t": time.time()})
        elif op == "hb":
            pass
        elif op == "bye":
            reason = msg.get("reason")
            core.worker_gone(wid, reason if isinstance(reason, str) else "stopped", crash=False)
            return
        else:
            raise ProtocolError(f"unknown worker message {op!r}")
