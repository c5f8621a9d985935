"""Reading a journal back: its events in order, checked frame by frame.

A frame that fails its checksum is told apart in two ways:

- nothing intact follows it: a torn tail, left by a write that a crash or a full disk cut
  short.  Reading stops there; `torn_bytes` says how much the server will cut off.
- an intact frame follows it: damage in the middle.  Reading refuses, with the byte range,
  since replaying around it would silently change the state.
"""

from __future__ import annotations

import mmap
import os
from typing import Iterator

import msgpack

from hpcqueue.exceptions import JournalDamaged, JournalError
from hpcqueue.journal.format import (
    FRAME_LEN,
    HEADER_LEN,
    check_header,
    frame_at,
    next_frame,
    read_version,
)


def scan(buf, size: int, start: int = HEADER_LEN) -> Iterator[tuple]:
    """The file's regions in order: ("frame", offset, payload length) for an intact frame,
    ("bad", offset, end) for a damaged stretch (END is the next intact frame, or SIZE when
    nothing intact follows)."""
    off = start
    while off < size:
        length = frame_at(buf, off, size)
        if length is not None:
            yield ("frame", off, length)
            off += FRAME_LEN + length
            continue
        nxt = next_frame(buf, off, size)
        yield ("bad", off, size if nxt is None else nxt)
        if nxt is None:
            return
        off = nxt


def unpack_frame(payload: bytes, path, offset: int) -> list[dict]:
    """The events of an intact frame's payload."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(payload)
                                + 1)
    unpacker.feed(payload)
    try:
        events = list(unpacker)
    except (ValueError, msgpack.UnpackException) as e:
        events, bad = [], e
    else:
        bad = None if unpacker.tell() == len(payload) else "an event cut short"
    if bad is not None or not all(type(ev) is dict and isinstance(ev.get("e"), str)
                                  for ev in events):
        raise JournalError(
            f"journal {path}: the frame at byte {offset} passes its checksum but does not "
            f"hold events ({bad or 'a record that is not an event'}): it was not written by "
            "hpcqueue")
    return events


class _Mapped:
    """The file's bytes (a read-only mmap, or b"" for an empty file) and its size."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self.file = open(self.path, "rb")
        except OSError as e:
            raise JournalError(f"cannot read journal {self.path}: {e.strerror}") from None
        self.size = os.fstat(self.file.fileno()).st_size
        self.buf = (mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
                    if self.size else b"")

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self.file.close()


class JournalReader:
    """Iterates a version-2 journal's events.  Afterwards `good_end` is the offset after the
    last intact frame, `torn_bytes` how many bytes follow it (a torn tail), `count` the
    number of events and `offset` the frame of the last event given."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.good_end = HEADER_LEN
        self.torn_bytes = 0
        self.count = 0
        self.offset = HEADER_LEN

    @property
    def torn(self) -> bool:
        return self.torn_bytes > 0

    def __iter__(self) -> Iterator[dict]:
        m = _Mapped(self.path)
        try:
            check_header(bytes(m.buf[:HEADER_LEN]), self.path)
            buf, path = m.buf, self.path
            for kind, off, n in scan(buf, m.size):
                if kind == "bad":
                    if n < m.size:
                        raise JournalDamaged(path, off, n)
                    self.torn_bytes = m.size - off
                    return
                self.offset = off
                for ev in unpack_frame(buf[off + FRAME_LEN:off + FRAME_LEN + n], path, off):
                    self.count += 1
                    yield ev
                self.good_end = off + FRAME_LEN + n
        finally:
            m.close()


def read_events(path) -> Iterator[dict]:
    return iter(JournalReader(path))


def read_v1_events(path) -> tuple[list[dict], int]:
    """(events, bytes after the last whole one) of a version-1 journal (bare msgpack maps)."""
    m = _Mapped(path)
    try:
        if read_version(bytes(m.buf[:HEADER_LEN]), path) != 1:
            raise JournalError(f"{path} is not a version-1 journal: nothing to upgrade")
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=m.size + 1)
        unpacker.feed(m.buf[HEADER_LEN:])
        events, end = [], 0
        try:
            for ev in unpacker:
                if type(ev) is not dict or not isinstance(ev.get("e"), str):
                    raise ValueError("a record that is not an event")
                events.append(ev)
                end = unpacker.tell()
        except (ValueError, msgpack.UnpackException) as e:
            raise JournalError(
                f"version-1 journal {path} is damaged near byte {HEADER_LEN + end} ({e}): "
                "it cannot be upgraded as it is") from None
        return events, m.size - HEADER_LEN - end
    finally:
        m.close()


def replay(events, path, state=None, where=None):
    """Apply EVENTS to STATE (a new ServerState by default); an event that does not fit is a
    JournalError naming it."""
    from hpcqueue.state import ServerState

    state = ServerState() if state is None else state
    apply = state.apply
    n = 0
    for ev in events:
        n += 1
        try:
            apply(ev)
        except Exception as e:  # any failure here means the file is not ours
            at = f" (frame at byte {where()})" if where is not None else ""
            kind = ev.get("e") if isinstance(ev, dict) else None
            if isinstance(kind, str) and kind not in state._handlers:
                from hpcqueue import __version__

                raise JournalError(
                    f"journal {path}: event {n}{at} is of a kind ({kind!r}) that hpcqueue "
                    f"{__version__} does not know: a newer release wrote it; run that "
                    "release on it") from None
            raise JournalError(
                f"journal {path}: event {n}{at} ({ev.get('e')!r}) does not fit the state "
                f"before it ({type(e).__name__}: {e}); `hpcqueue journal check {path}` "
                "tells more") from None
    state.just_done.clear()
    state.to_kill.clear()
    return state


def restore_file(path):
    """Replay a journal into a fresh :class:`ServerState`; returns (state, reader)."""
    reader = JournalReader(path)
    state = replay(reader, path, where=lambda: reader.offset)
    return state, reader
