"""The server's side of a worker connection: register, take results, lose it."""

from __future__ import annotations

import logging
import time

from hpcqueue.exceptions import ProtocolError
from hpcqueue.protocol import read_message
from hpcqueue.server.core import Core, Peer

log = logging.getLogger("hpcqueue.server")

_INFO_KEYS = {
    "hostname": str, "pid": int, "cpus": int, "res": dict, "batch_job": str,
    "remaining": (int, float), "version": str, "idle_timeout": (int, float),
    "time_limit": (int, float), "manager": str, "group": str, "alloc": str,
}


def _check_info(info) -> dict:
    if not isinstance(info, dict):
        raise ProtocolError("worker hello without info")
    out = {}
    for key, kind in _INFO_KEYS.items():
        value = info.get(key)
        if value is not None:
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ProtocolError(f"worker hello: {key!r} has the wrong type")
            out[key] = value
    if out.get("cpus", 1) < 1:
        raise ProtocolError("worker hello: cpus must be at least 1")
    res = out.get("res") or {}
    if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in res.items()):
        raise ProtocolError("worker hello: resources must map names to counts")
    return out


def _check_results(core: Core, rows) -> list:
    jobs = core.state.jobs
    if not isinstance(rows, list):
        raise ProtocolError("results must be a list")
    for row in rows:
        if not (isinstance(row, list) and len(row) == 7):
            raise ProtocolError("a result must have 7 fields")
        job_id, i, inst, code, t0, t1, msg = row
        job = jobs.get(job_id)
        if (job is None or not isinstance(i, int) or not 0 <= i < job.n
                or not isinstance(inst, int) or not isinstance(code, int)
                or not isinstance(t0, (int, float)) or not isinstance(t1, (int, float))
                or not (msg is None or isinstance(msg, str))):
            raise ProtocolError(f"malformed result {row!r}")
    return rows


def _check_tasks(core: Core, tasks) -> list:
    jobs = core.state.jobs
    if not isinstance(tasks, list) or len(tasks) % 2:
        raise ProtocolError("a task list must be [job, [index, ...], ...]")
    for k in range(0, len(tasks), 2):
        job = jobs.get(tasks[k])
        idxs = tasks[k + 1]
        if job is None or not isinstance(idxs, list) or not all(
                isinstance(i, int) and 0 <= i < job.n for i in idxs):
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
    log.info("worker %d connected from %s (%s, %d cpus%s)", wid, peer.addr,
             info.get("hostname"), info.get("cpus", 1),
             f", batch job {info['batch_job']}" if info.get("batch_job") else "")
    core.send(peer, {"op": "welcome", "id": wid, "heartbeat": heartbeat,
                     "server_id": core.info.get("server_id")})
    core.schedule_dispatch()
    reader, session = peer.reader, peer.session
    while True:
        msg = await read_message(reader, session)
        peer.last_seen = time.monotonic()
        if not isinstance(msg, dict):
            raise ProtocolError("a worker message must be a map")
        op = msg.get("op")
        if op == "done":
            core.record({"e": "done", "w": wid, "r": _check_results(core, msg.get("r")),
                         "t": time.time()})
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
