"""Reading a journal back: events in order, a cut-short tail tolerated."""

from __future__ import annotations

import os
from typing import Iterator

import msgpack

from hpcqueue.exceptions import JournalError
from hpcqueue.journal.format import HEADER_LEN, check_header


class JournalReader:
    """Iterates a journal's events; afterwards `good_end` is the offset after
    the last whole record and `torn` tells whether bytes followed it."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.good_end = HEADER_LEN
        self.torn = False
        self.count = 0

    def __iter__(self) -> Iterator[dict]:
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise JournalError(f"cannot read journal {self.path}: {e.strerror}") from None
        with f:
            check_header(f.read(HEADER_LEN), self.path)
            size = os.fstat(f.fileno()).st_size
            unpacker = msgpack.Unpacker(
                f, raw=False, strict_map_key=False, max_buffer_size=1 << 30,
                read_size=1 << 20,
            )
            count = 0
            tell = unpacker.tell
            end = 0  # where the last whole record ends (tell() after a torn one is past it)
            try:
                for ev in unpacker:  # iterating in C; a cut-short tail just ends it
                    if type(ev) is not dict or "e" not in ev:
                        raise JournalError(
                            f"journal {self.path} holds a record that is not an event near "
                            f"byte {HEADER_LEN + unpacker.tell()}: the file is damaged or not "
                            "ours")
                    count += 1
                    end = tell()
                    self.count = count
                    self.good_end = HEADER_LEN + end
                    yield ev
            except (ValueError, msgpack.UnpackException) as e:
                raise JournalError(
                    f"journal {self.path} is damaged near byte {HEADER_LEN + unpacker.tell()}: "
                    f"{e}; `hpcqueue journal export` shows what is readable before it"
                ) from None
            self.torn = self.good_end < size


def read_events(path) -> Iterator[dict]:
    return iter(JournalReader(path))


def restore_file(path):
    """Replay a journal into a fresh :class:`ServerState`; returns (state, reader)."""
    from hpcqueue.state import ServerState

    state = ServerState()
    reader = JournalReader(path)
    for ev in reader:
        try:
            state.apply(ev)
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise JournalError(
                f"journal {path}: event {reader.count} ({ev.get('e')!r}) does not fit the "
                f"state before it ({type(e).__name__}: {e}); the file is damaged"
            ) from None
    state.just_done.clear()
    state.to_kill.clear()
    return state, reader
