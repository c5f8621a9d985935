"""Appending events to the journal, with grouped writes and timed fsyncs."""

from __future__ import annotations

import fcntl
import os
import time

import msgpack

from hpcqueue.exceptions import JournalError
from hpcqueue.journal.format import HEADER_LEN, check_header, header


class JournalWriter:
    """Owns the journal file while a server runs (an exclusive lock on it)."""

    def __init__(self, path: str | os.PathLike, fsync_interval: float = 1.0):
        self.path = os.fspath(path)
        self.fsync_interval = fsync_interval
        self._buf = bytearray()
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._unsynced = False
        self._last_sync = time.monotonic()
        self.bytes_written = 0
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
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
            os.write(self.fd, header())
            os.fsync(self.fd)
        else:
            check_header(os.pread(self.fd, HEADER_LEN, 0), self.path)
            if good_end is not None and good_end < size:
                os.ftruncate(self.fd, good_end)
        os.lseek(self.fd, 0, os.SEEK_END)

    def append(self, event: dict) -> None:
        self._buf += self._pack(event)

    @property
    def dirty(self) -> bool:
        return bool(self._buf)

    def flush(self) -> None:
        """Hand buffered events to the kernel (survives a crash of this process)."""
        buf = self._buf
        if not buf:
            return
        view = memoryview(buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.bytes_written += len(buf)
        self._buf = bytearray()
        self._unsynced = True

    def maybe_sync(self) -> None:
        if self._unsynced and time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        self.flush()
        if self._unsynced:
            os.fsync(self.fd)
            self._unsynced = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            os.close(self.fd)
