"""Appending events to the journal: one checksummed frame per write, undone if it fails.

The writer knows where the last whole frame ends and writes the next one there (`pwrite`),
so a write that a full disk cut short is taken back (truncated), and if even that fails the
next good write lands over the remains.  A failed write raises JournalUnavailable; the
caller decides what the event was worth (see :mod:`hpcqueue.server.core`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time

import msgpack

from hpcqueue.exceptions import JournalError, JournalUnavailable
from hpcqueue.journal.format import HEADER_LEN, check_header, frame, header

log = logging.getLogger("hpcqueue.journal")


def open_private(path: str, flags: int) -> int:
    """Open (or create) PATH readable by its owner only, tightening an existing file."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        try:
            os.fchmod(fd, mode & 0o700)
        except OSError as e:
            os.close(fd)
            raise JournalError(f"journal {path} is readable by others (mode {mode:o}) and "
                               f"cannot be made private: {e.strerror}") from None
        log.warning("journal %s was readable by others (mode %o): made it 0600", path, mode)
    return fd


class JournalWriter:
    """Owns the journal file while a server runs (an exclusive lock on it)."""

    def __init__(self, path: str | os.PathLike, fsync_interval: float = 1.0):
        self.path = os.fspath(path)
        self.fsync_interval = fsync_interval
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._unsynced = False
        self._last_sync = time.monotonic()
        self._tail_dirty = False  # bytes of a failed write may lie after `end`
        self.end = 0  # where the next frame goes
        self.last_start = 0  # where the last frame written begins
        self.bytes_written = 0
        try:
            self.fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise JournalError(f"cannot open journal {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise JournalError(
                f"journal {self.path} is in use by another running server: stop it "
                "(`hpcqueue server stop`) or give another --journal path"
            ) from None

    def prepare(self, good_end: int | None) -> None:
        """Write a header into a new file, or cut a torn tail off an old one."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            self._put(header(), 0)
            self.sync()
        else:
            check_header(os.pread(self.fd, HEADER_LEN, 0), self.path)
            self.end = size
            if good_end is not None and good_end < size:
                log.warning("journal %s: cut a torn last record (%d bytes at byte %d); it "
                            "was never acknowledged", self.path, size - good_end, good_end)
                self._cut(good_end)
                if self._tail_dirty:
                    raise JournalError(f"cannot cut the torn end of journal {self.path}")
                self.end = good_end
        self.last_start = self.end

    def write(self, events: list[dict]) -> None:
        """Append EVENTS as one frame, or raise JournalUnavailable having written nothing."""
        pack = self._pack
        payload = b"".join([pack(ev) for ev in events])
        self._put(frame(payload) + payload, self.end)

    def replace_with(self, events) -> tuple[int, int]:
        """Rewrite the journal as EVENTS (crash-safely: see :func:`tools.write_journal`) and
        go on appending to the new file; returns (bytes before, bytes after)."""
        from hpcqueue.journal.tools import write_journal

        before = self.end
        try:
            size = write_journal(self.path, events)
        except OSError as e:
            raise JournalUnavailable(self.path, e) from None
        fd = open_private(self.path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(self.fd)
        self.fd = fd
        self.end = self.last_start = size
        self._unsynced, self._tail_dirty = False, False
        self._last_sync = time.monotonic()
        return before, size

    def undo_last(self) -> None:
        """Take the last frame back out (its event turned out not to apply)."""
        self._cut(self.last_start)
        self.end = self.last_start

    def _put(self, data: bytes, at: int) -> None:
        view = memoryview(data)
        off = at
        try:
            while view:
                n = os.pwrite(self.fd, view, off)
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[n:]
                off += n
        except OSError as e:
            self._cut(at)
            raise JournalUnavailable(self.path, e) from None
        if self._tail_dirty:
            self._cut(off)
        self.last_start, self.end = at, off
        self.bytes_written += len(data)
        self._unsynced = True

    def _cut(self, at: int) -> None:
        try:
            os.ftruncate(self.fd, at)
            self._tail_dirty = False
        except OSError:
            self._tail_dirty = True

    def maybe_sync(self) -> None:
        if self._unsynced and time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            try:
                os.fsync(self.fd)
            except OSError as e:
                raise JournalUnavailable(self.path, e) from None
            self._unsynced = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        try:
            self.sync()
        except JournalUnavailable as e:
            log.error("%s", e)
        finally:
            os.close(self.fd)
