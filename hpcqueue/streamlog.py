"""Streamed task output (`submit --stream DIR`): a few framed log files instead of a file per task.

Each worker writes the stdout and stderr of all its tasks of a job into one log, with a
small index beside it::

    DIR/job-<job id>/<worker id>-<worker start>.hqlog
    DIR/job-<job id>/<worker id>-<worker start>.hqidx

The log is a 16-byte header (b"HPCQSLOG", u16 version, u16 reserved, u32 CRC-32 of the 12
before), then frames of the journal's shape (hpcqueue/journal/format.py: magic, length,
CRC-32, payload), each written with one `write`.  A payload is a msgpack list:

    [1 or 2, job, task, instance, data]           a chunk of stdout (1) or stderr (2)
    [0, job, task, instance, exit code, first]    the task's end; FIRST is the log offset
                                                  at which the task started

The chunks of tasks that run side by side interleave; a task's chunks all lie between its
FIRST offset and its end frame.  The index holds one record per ended task, appended right
after its end frame: u64 task, u64 first, u64 end (the offset of the end frame), u32
instance, u32 CRC-32 of the 28 bytes before.  Task ids come first and 8-aligned, so that a
reader can pick the records of a range of tasks out of 100,000 without unpacking them all.
The index is only a cache: the end frames say the same, so a reader scans the log past the
last indexed end (a crash between the two writes, or an index cut short) and, if an index
record it reads is damaged, the whole log.

A reader skips what is not a whole frame with a good checksum (a torn tail after a
kill -9, a flipped bit) by looking for the next frame magic, and counts the bytes it
skipped.  Only ended tasks are read back: a task's output shows once its end frame is
written.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field

import msgpack

from hpcqueue.journal.format import FRAME_LEN, FRAME_MAGIC, frame, frame_at

MAGIC = b"HPCQSLOG"
VERSION = 1
HEADER_LEN = 16
LOG_SUFFIX = ".hqlog"
INDEX_SUFFIX = ".hqidx"
END, STDOUT, STDERR = 0, 1, 2
STREAMS = {"stdout": STDOUT, "stderr": STDERR}
INDEX = struct.Struct("<QQQII")  # task, first, end, instance, crc


def header() -> bytes:
    head = struct.pack("<8sHH", MAGIC, VERSION, 0)
    return head + struct.pack("<I", zlib.crc32(head))


def job_dir(stream_dir: str, job_id: int) -> str:
    return os.path.join(stream_dir, f"job-{job_id}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------ writing


class LogWriter:
    """One worker's log and index for one job: appends frames, one `write` each."""

    __slots__ = ("path", "fd", "index_fd", "offset")

    def __init__(self, directory: str, name: str):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, name + LOG_SUFFIX)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o644)
        try:
            self.index_fd = os.open(os.path.join(directory, name + INDEX_SUFFIX), flags, 0o644)
        except OSError:
            os.close(self.fd)
            raise
        self.offset = os.fstat(self.fd).st_size
        if self.offset == 0:
            _write_all(self.fd, header())
            self.offset = HEADER_LEN

    def _frame(self, payload: bytes) -> int:
        at = self.offset
        _write_all(self.fd, frame(payload) + payload)
        self.offset = at + FRAME_LEN + len(payload)
        return at

    def chunk(self, job: int, task: int, instance: int, stream: int, data: bytes) -> None:
        self._frame(msgpack.packb([stream, job, task, instance, data]))

    def end(self, job: int, task: int, instance: int, code: int, first: int) -> None:
        at = self._frame(msgpack.packb([END, job, task, instance, code, first]))
        rest = INDEX.pack(task, first, at, instance, 0)[:-4]
        _write_all(self.index_fd, rest + struct.pack("<I", zlib.crc32(rest)))

    def close(self) -> None:
        for fd in (self.fd, self.index_fd):
            try:
                os.close(fd)
            except OSError:
                pass


# ------------------------------------------------------------------ reading


@dataclass
class Damage:
    """What a read skipped: bytes of logs that were not intact frames, damaged index records."""

    skipped: int = 0
    files: set = field(default_factory=set)
    index_records: int = 0
    _seen: set = field(default_factory=set)

    def add(self, path: str, at: int, n: int) -> None:
        if n and (path, at) not in self._seen:  # two tasks' reads may cross the same damage
            self._seen.add((path, at))
            self.skipped += n
            self.files.add(path)

    def message(self) -> str | None:
        if not self.skipped and not self.index_records:
            return None
        parts = []
        if self.skipped:
            parts.append(f"skipped {self.skipped:,} damaged byte(s) in {len(self.files)} log "
                         "file(s) (a write cut short by a crash, or corruption)")
        if self.index_records:
            parts.append(f"{self.index_records} damaged index record(s) (the log was scanned "
                         "instead)")
        return "; ".join(parts)


def _payload(buf, pos: int, size: int):
    """(payload list, next offset) of an intact frame at POS, or None."""
    n = frame_at(buf, pos, size)
    if n is None:
        return None
    start = pos + FRAME_LEN
    try:
        item = msgpack.unpackb(buf[start:start + n])
    except (ValueError, msgpack.UnpackException):
        return None
    if not (isinstance(item, list) and len(item) >= 5 and item[0] in (END, STDOUT, STDERR)):
        return None
    return item, start + n


def scan(buf, start: int, last: int, damage: Damage, path: str):
    """Yield (offset, payload) of the intact frames that begin from START up to LAST (both
    inclusive), skipping (and counting in DAMAGE) what lies between them."""
    size = len(buf)
    pos = start
    while pos <= last and pos < size:
        got = _payload(buf, pos, size)
        if got is not None:
            yield pos, got[0]
            pos = got[1]
            continue
        nxt = pos  # the next intact frame, wherever it is: the damage ends there
        while True:
            nxt = buf.find(FRAME_MAGIC, nxt + 1)
            if nxt < 0 or _payload(buf, nxt, size) is not None:
                break
        if nxt < 0:
            nxt = size
        damage.add(path, pos, nxt - pos)
        pos = nxt


@dataclass(frozen=True)
class Ended:
    """Where an ended task's output lies in a log."""

    task: int
    instance: int
    first: int
    end: int
    path: str


def _task_column(data, n: int):
    """The task ids of the first N index records in DATA, without unpacking the records."""
    if sys.byteorder == "little":
        return memoryview(data)[:n * INDEX.size].cast("Q")[0::INDEX.size // 8]
    return [rec[0] for rec in INDEX.iter_unpack(memoryview(data)[:n * INDEX.size])]


def _read_index(path: str, keep, bounds, damage: Damage) -> tuple[list, int, bool]:
    """(records kept by KEEP(task) among those within BOUNDS (lo, hi) if given, offset of the
    last indexed end or None, whether the records read were intact)."""
    try:
        with open(path[:-len(LOG_SUFFIX)] + INDEX_SUFFIX, "rb") as f:
            data = f.read()
    except OSError:
        return [], None, True
    size = INDEX.size
    n = len(data) // size  # a record cut short is the crash's: the log says the same

    def intact(k: int):
        rec = INDEX.unpack_from(data, k * size)
        return rec if zlib.crc32(data[k * size:(k + 1) * size - 4]) == rec[4] else None

    if bounds is None:
        picks = range(n)
    else:
        lo, hi = bounds
        picks = [k for k, t in enumerate(_task_column(data, n)) if lo <= t <= hi]
    records = []
    for k in picks:
        rec = intact(k)
        if rec is None:
            damage.index_records += 1
            return [], None, False
        if keep(rec[0]):
            records.append(rec)
    last = None
    if n:  # the last record: its end is the furthest
        rec = intact(n - 1)
        if rec is None:
            damage.index_records += 1
            return [], None, False
        last = rec[2]
    return records, last, True


def _ended_in(path: str, buf, keep, bounds, damage: Damage) -> list[Ended]:
    """The ended tasks of one log kept by KEEP(task): from its index, then its tail."""
    records, last, intact = _read_index(path, keep, bounds, damage)
    out = [Ended(r[0], r[3], r[1], r[2], path) for r in records]
    if not intact or (last is not None and last >= len(buf)):
        last = None  # a damaged index, or one ahead of a log cut short: scan it all
    if len(buf) < HEADER_LEN or buf[:HEADER_LEN] != header():
        damage.add(path, 0, min(len(buf), HEADER_LEN))
    start = HEADER_LEN if last is None else last
    seen = {(e.task, e.instance) for e in out}
    for pos, item in scan(buf, start, len(buf), damage, path):
        if item[0] == END and len(item) >= 6 and keep(item[2]) and \
                (item[2], item[3]) not in seen:
            out.append(Ended(item[2], item[3], item[5], pos, path))
    return out


@dataclass
class TaskOutput:
    task: int
    instance: int
    code: int | None  # None if the end frame was damaged
    data: bytes


class JobLogs:
    """The logs of one streamed job, opened for reading (mapped, not read whole)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.damage = Damage()
        self._maps: dict[str, object] = {}
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(LOG_SUFFIX))
        except FileNotFoundError:
            names = []
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) \
                    if size else b""

    @property
    def files(self) -> list[str]:
        return list(self._maps)

    def close(self) -> None:
        for m in self._maps.values():
            if isinstance(m, mmap.mmap):
                m.close()
        self._maps.clear()

    def __enter__(self) -> JobLogs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ended(self, keep=lambda task: True, all_instances: bool = False,
              bounds: tuple[int, int] | None = None) -> list[Ended]:
        """Ended tasks kept by KEEP(task), by task id then instance; only each task's
        latest instance unless ALL_INSTANCES.  BOUNDS (lo, hi): all the tasks KEEP keeps
        are within them, which spares looking at the others."""
        found: dict[tuple, Ended] = {}
        for path, buf in self._maps.items():
            for e in _ended_in(path, buf, keep, bounds, self.damage):
                found.setdefault((e.task, e.instance), e)
        keys = sorted(found)
        if not all_instances:
            latest: dict[int, tuple] = {}
            for key in keys:
                latest[key[0]] = key
            keys = sorted(latest.values())
        return [e for e in (found[k] for k in keys) if self._intact_end(e)]

    def _intact_end(self, e: Ended) -> bool:
        """Whether E's end frame is there and intact (an index may be ahead of a log cut
        short, or the frame damaged: then the task has not ended, as far as we can tell)."""
        buf = self._maps[e.path]
        got = _payload(buf, e.end, len(buf))
        if got is not None and got[0][0] == END and got[0][2:4] == [e.task, e.instance]:
            return True
        for _ in scan(buf, e.end, e.end, self.damage, e.path):  # counts the damage
            pass
        return False

    def output(self, e: Ended, stream: str) -> TaskOutput:
        """What task E wrote to STREAM (stdout or stderr)."""
        want = STREAMS[stream]
        buf = self._maps[e.path]
        parts = []
        code = None
        for pos, item in scan(buf, e.first, e.end, self.damage, e.path):
            if item[2] != e.task or item[3] != e.instance:
                continue
            if item[0] == want and isinstance(item[4], bytes):
                parts.append(item[4])
            elif item[0] == END and pos == e.end:
                code = item[4]
        return TaskOutput(e.task, e.instance, code, b"".join(parts))


def tail_lines(data: bytes, n: int) -> bytes:
    """The last N lines of DATA (a last line without a newline counts as one)."""
    if n <= 0:
        return b""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    pos = end
    for _ in range(n):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return data
    return data[pos + 1:]
