"""The append-only journal of state events.

File layout: a 16-byte header (``HPCQJRNL``, a little-endian u16 format
version, six reserved bytes), then one msgpack map per event, back to back.

Durability policy, as the server applies it:

- An event is appended to an in-memory buffer when it happens, and the buffer
  is written to the file (one ``write`` call) before the server sends any
  message that depends on it: a submit is acknowledged only once its event is
  in the file.  A crash of the server process (``kill -9``) therefore loses
  nothing that was acknowledged: the data is in the kernel's page cache.
- ``fsync`` runs at most once per ``fsync_interval`` (default 1 s) while there
  is unsynced data, on ``journal flush`` and at shutdown.  A crash of the
  whole machine can lose the events of the last interval: tasks finished in it
  run again after the restart, and a submit acknowledged in it is lost.
- A record cut short at the end (the server died mid-write) is dropped on the
  next open; any other damage is an error naming the offset.
"""

from hpcqueue.journal.reader import read_events, restore_file
from hpcqueue.journal.writer import JournalWriter

__all__ = ["JournalWriter", "read_events", "restore_file"]
