"""Offline journal tools: export as NDJSON, prune finished jobs."""

from __future__ import annotations

import fcntl
import json
import os

import msgpack

from hpcqueue.exceptions import JournalError
from hpcqueue.journal.format import header
from hpcqueue.journal.reader import JournalReader, restore_file


def export(path, out) -> int:
    """Write every event as one JSON line; returns the count."""
    n = 0
    reader = JournalReader(path)
    for ev in reader:
        out.write(json.dumps(ev, default=repr, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n


def _lock(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise JournalError(f"cannot open journal {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(
            f"journal {path} is in use by a running server: stop it first "
            "(`hpcqueue server stop`), then prune"
        ) from None
    return fd


def _filter_tasks(tasks: list, drop: set) -> list:
    out: list = []
    for k in range(0, len(tasks), 2):
        if tasks[k] not in drop:
            out += (tasks[k], tasks[k + 1])
    return out


def prune(path) -> tuple[int, int, int]:
    """Drop the events of jobs that have ended; returns (jobs dropped, events before, after)."""
    fd = _lock(path)
    try:
        state, reader = restore_file(path)
        drop = {j.id for j in state.jobs.values() if j.done}
        tmp = f"{path}.prune.{os.getpid()}"
        pack = msgpack.Packer(use_bin_type=True).pack
        kept = 0
        with open(tmp, "wb") as f:
            f.write(header())
            f.write(pack({"e": "ids", "job": state.next_job_id, "worker": state.next_worker_id}))
            for ev in JournalReader(path):
                kind = ev["e"]
                if kind == "job" and ev["id"] in drop:
                    continue
                if kind in ("start", "back"):
                    ev["tasks"] = _filter_tasks(ev["tasks"], drop)
                    if not ev["tasks"]:
                        continue
                elif kind == "done":
                    ev["r"] = [r for r in ev["r"] if r[0] not in drop]
                    if not ev["r"]:
                        continue
                elif kind == "cancel":
                    ev["ids"] = [j for j in ev["ids"] if j not in drop]
                    if not ev["ids"]:
                        continue
                f.write(pack(ev))
                kept += 1
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return len(drop), reader.count, kept + 1
    finally:
        os.close(fd)
