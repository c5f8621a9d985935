"""Offline journal tools: export, check, repair, upgrade, prune.

Every tool that writes a journal writes a new file beside it (`PATH.tmp`, 0600), fsyncs it,
renames it over PATH and fsyncs the folder: a kill at any moment leaves either the old journal
or the new one.  A leftover `PATH.tmp` of a killed run is overwritten by the next.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field

import msgpack

from hpcqueue.exceptions import JournalDamaged, JournalError
from hpcqueue.journal.format import FRAME_LEN, HEADER_LEN, frame, header, read_version
from hpcqueue.journal.reader import (
    JournalReader,
    _Mapped,
    read_v1_events,
    restore_file,
    scan,
    unpack_frame,
)
from hpcqueue.journal.writer import open_private

FRAME_TARGET = 1 << 20  # bytes of events per frame in a rewritten journal


def journal_version(path) -> int:
    try:
        with open(path, "rb") as f:
            return read_version(f.read(HEADER_LEN), path)
    except OSError as e:
        raise JournalError(f"cannot read journal {path}: {e.strerror}") from None


def temp_path(path) -> str:
    return f"{os.fspath(path)}.tmp"


def write_journal(path, events) -> int:
    """Replace PATH, crash-safely, by a journal of EVENTS; returns its size in bytes."""
    path = os.fspath(path)
    tmp = temp_path(path)
    pack = msgpack.Packer(use_bin_type=True).pack
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(header())
            chunk: list[bytes] = []
            size = 0
            for ev in events:
                data = pack(ev)
                if chunk and size + len(data) > FRAME_TARGET:
                    payload = b"".join(chunk)
                    f.write(frame(payload))
                    f.write(payload)
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data)
            if chunk:
                payload = b"".join(chunk) if len(chunk) > 1 else chunk[0]
                f.write(frame(payload))
                f.write(payload)
            f.flush()
            os.fsync(fd)
            written = f.tell()
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    sync_dir(path)
    return written


def sync_dir(path) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock(path, what: str) -> int:
    """An fd holding PATH's lock: refuses a journal that a running server holds."""
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
            f"(`hpcqueue server stop`), then {what}") from None
    return fd


def backup_name(path, suffix: str) -> str:
    name = f"{path}.{suffix}"
    n = 1
    while os.path.exists(name):
        n += 1
        name = f"{path}.{suffix}.{n}"
    return name


# ------------------------------------------------------------------ export

def export(path, out) -> int:
    """Write every event as one JSON line; returns the count."""
    n = 0
    events = read_v1_events(path)[0] if journal_version(path) == 1 else JournalReader(path)
    for ev in events:
        out.write(json.dumps(ev, default=repr, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n


# ------------------------------------------------------------------ check and repair

@dataclass
class Report:
    path: str
    size: int
    version: int = 2
    frames: int = 0
    events: int = 0
    #: (start, end) byte ranges that fail their checksum; the last may be a torn tail
    damaged: list = field(default_factory=list)
    torn_tail: int = 0  # bytes of a torn last write (cut at the next start)
    replay_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.middle_damage and self.replay_error is None

    @property
    def middle_damage(self) -> list:
        return [r for r in self.damaged if r[1] < self.size]

    def lines(self) -> list[str]:
        out = [f"{self.path}: format version {self.version}, {self.size:,} bytes, "
               f"{self.frames:,} intact frame(s), {self.events:,} event(s)"]
        for start, end in self.middle_damage:
            out.append(f"damaged: bytes {start:,}-{end - 1:,} ({end - start:,} bytes) fail "
                       f"their checksum; intact records follow from byte {end:,}")
        if self.torn_tail:
            out.append(f"torn tail: the last {self.torn_tail:,} bytes (from byte "
                       f"{self.size - self.torn_tail:,}) are a write cut short; the server "
                       "cuts them at its next start (they were never acknowledged)")
        if self.replay_error:
            out.append(f"replay: {self.replay_error}")
        if self.ok:
            out.append("ok: the server can start on it")
        else:
            out.append(f"not ok: `hpcqueue journal repair {self.path}` writes a journal of "
                       "every intact record, keeping the original")
        return out


def _frames(path):
    """(report, [(offset, events)] of intact frames) of a version-2 journal."""
    m = _Mapped(path)
    try:
        report = Report(os.fspath(path), m.size)
        read_version(bytes(m.buf[:HEADER_LEN]), path)
        intact = []
        for kind, off, n in scan(m.buf, m.size):
            if kind == "bad":
                report.damaged.append((off, n))
                if n == m.size:
                    report.torn_tail = m.size - off
                continue
            events = unpack_frame(m.buf[off + FRAME_LEN:off + FRAME_LEN + n], path, off)
            intact.append((off, events))
            report.frames += 1
            report.events += len(events)
        return report, intact
    finally:
        m.close()


def check(path) -> Report:
    """What is intact in a journal, where damage begins, and whether it replays."""
    if journal_version(path) == 1:
        events, torn = read_v1_events(path)
        report = Report(os.fspath(path), os.path.getsize(path), version=1,
                        events=len(events), torn_tail=torn)
        report.replay_error = ("format version 1: `hpcqueue journal upgrade` it to check it "
                               "fully")
        return report
    report, _ = _frames(path)
    if not report.middle_damage:
        try:
            restore_file(path)
        except JournalDamaged:
            pass
        except JournalError as e:
            report.replay_error = str(e)
    return report


def _replayable(events: list[dict]) -> tuple[list[dict], list[int]]:
    """EVENTS without those that do not fit the state before them (their positions)."""
    from hpcqueue.state import ServerState

    kept = list(events)
    dropped: list[int] = []
    while True:
        state = ServerState()
        for k, ev in enumerate(kept):
            try:
                state.apply(ev)
            except Exception:  # an event orphaned by the damage
                dropped.append(k)
                del kept[k]
                break
        else:
            return kept, dropped


def repair(path) -> tuple[str, Report, int]:
    """Write a journal of every intact event that replays; keep the original beside it.

    Returns (where the original is now, the report of the damaged file, events dropped
    because the damage took what they depended on)."""
    fd = lock(path, "repair it")
    try:
        if journal_version(path) == 1:
            raise JournalError(f"{path} has format version 1: upgrade it first "
                               f"(`hpcqueue journal upgrade {path}`)")
        report, intact = _frames(path)
        events = [ev for _, evs in intact for ev in evs]
        kept, dropped = _replayable(events)
        backup = backup_name(path, "damaged")
        os.link(path, backup)
        write_journal(path, kept)
        return backup, report, len(dropped)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ upgrade and prune

def upgrade(path) -> tuple[str, int]:
    """Rewrite a version-1 journal as version 2, keeping the original; (backup, events)."""
    fd = lock(path, "upgrade it")
    try:
        events, _torn = read_v1_events(path)
        backup = backup_name(path, "v1")
        os.link(path, backup)
        write_journal(path, events)
        return backup, len(events)
    finally:
        os.close(fd)


def compact(path) -> tuple[int, int]:
    """Rewrite a stopped server's journal as a snapshot of its state; (bytes before, after)."""
    from hpcqueue.journal.snapshot import iter_dump

    fd = lock(path, "compact it (or run `hpcqueue journal compact` with no PATH)")
    try:
        before = os.path.getsize(path)
        state, _ = restore_file(path)
        return before, write_journal(path, iter_dump(state))
    finally:
        os.close(fd)


def _filter_tasks(tasks: list, drop: set) -> list:
    out: list = []
    for k in range(0, len(tasks), 2):
        if tasks[k] not in drop:
            out += (tasks[k], tasks[k + 1])
    return out


def _pruned(events, drop: set, state):
    yield {"e": "ids", "job": state.next_job_id, "worker": state.next_worker_id,
           "t": time.time()}
    for ev in events:
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
        yield ev


def prune(path) -> tuple[int, int, int]:
    """Drop the events of jobs that have ended; returns (jobs dropped, events before, after)."""
    fd = lock(path, "prune")
    try:
        state, reader = restore_file(path)
        drop = {j.id for j in state.jobs.values() if j.done}
        kept = 0

        def counted():
            nonlocal kept
            for ev in _pruned(JournalReader(path), drop, state):
                kept += 1
                yield ev

        write_journal(path, counted())
        return len(drop), reader.count, kept
    finally:
        os.close(fd)
