"""The client side of what a server pushes on a connection of its own: a :class:`Watch`
over jobs (a `wait` request: progress, the tasks that fail for good, the end) and the
:class:`Updates` of the whole server (a `watch` request, the dashboard's feed).

Both are iterators that open their connection and send their request when made, so that
a server that is not there raises at once, and that close it when they end, when
:meth:`close` is called (from any thread: a reader blocked on it wakes and stops), or when
a ``with`` block ends.  Both have :meth:`fileno`, for ``select()``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Union

from hpcqueue.exceptions import ConnectionLost, from_reply

if TYPE_CHECKING:
    from hpcqueue.client import Client
    from hpcqueue.views import JobSummary


@dataclass(frozen=True)
class FailedTask:
    """A task that failed for good (no retry left), as the server tells a watch with
    ``failures=True``."""

    job: int
    id: int
    #: its line (--each-line) or JSON element (--from-json); None for array tasks
    entry: str | None = None
    exit_code: int | None = None
    #: why it failed, when that is not an exit code (a time limit, a lost worker, ...)
    error: str | None = None

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> FailedTask:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})


@dataclass(frozen=True)
class Failures:
    """Tasks that failed for good since the last item of a watch (never empty); the first
    :class:`Failures` of a watch holds those that had failed before it began."""

    tasks: tuple[FailedTask, ...]

    def __iter__(self) -> Iterator[FailedTask]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


class _Pushed:
    """A connection the server pushes on, and how it ends."""

    def __init__(self, client: Client, timeout: float | None):
        self._client = client
        self._conn = client.connect(timeout)
        self._closed = False

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def fileno(self) -> int:
        """The connection's socket, for ``select()`` (-1 once closed)."""
        return -1 if self._conn is None else self._conn.sock.fileno()

    def close(self) -> None:
        """Close the connection; a thread blocked reading it wakes, and the iteration ends
        (no error)."""
        self._closed = True
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            try:  # wakes a thread blocked in recv() on it
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _send(self, msg: dict) -> None:
        try:
            self._conn.send(msg)
        except (OSError, ConnectionLost) as e:
            self.close()
            raise self._client._lost(e) from None

    def _recv(self):
        """The next message; StopIteration once closed (here or by close())."""
        conn = self._conn
        if conn is None:
            raise StopIteration
        try:
            return conn.recv()
        except (OSError, ConnectionLost) as e:
            closed = self._closed
            self.close()
            if closed:
                raise StopIteration from None
            raise self._client._lost(e) from None


class Watch(_Pushed):
    """The jobs of one `wait` request, as :meth:`hpcqueue.Client.watch` makes it.  Each item
    is a ``list[JobSummary]`` (progress, every INTERVAL seconds; then the final one, which is
    also kept as :attr:`final`), or with FAILURES a :class:`Failures`."""

    def __init__(self, client: Client, jobs, interval: float | None, unfinished: bool,
                 failures: bool):
        super().__init__(client, None)
        #: the jobs' final summaries, once the server has said they ended
        self.final: list[JobSummary] | None = None
        self._send({"op": "wait", "jobs": jobs, "progress": interval is not None,
                    "interval": interval, "unfinished": unfinished, "failures": failures})

    def __next__(self) -> Union[list[JobSummary], Failures]:
        from hpcqueue.views import JobSummary

        msg = self._recv()
        if isinstance(msg, dict) and "progress" in msg:
            return [JobSummary.from_dict(j) for j in msg["progress"]]
        if isinstance(msg, dict) and "failed" in msg:
            return Failures(tuple(FailedTask.from_dict(r) for r in msg["failed"]))
        self.close()
        if not isinstance(msg, dict) or not msg.get("ok"):
            raise from_reply(msg)  # e.g. the report of failures fell behind and was cut
        self.final = [JobSummary.from_dict(j) for j in msg["jobs"]]
        return self.final


class Updates(_Pushed):
    """What changes on the server, as :meth:`hpcqueue.Client.updates` makes it: the first
    item is everything (the most recent jobs and every unfinished one, the running workers,
    the queues, the totals), each later one what changed since (see docs/api.md)."""

    def __init__(self, client: Client, interval: float | None, jobs: int | None,
                 timeout: float | None):
        super().__init__(client, timeout)
        fields_ = {"op": "watch", "interval": interval}
        if jobs is not None:
            fields_["jobs"] = jobs
        self._send(fields_)
        first = self._recv_or_lost()
        if not isinstance(first, dict) or not first.get("ok"):
            self.close()
            raise from_reply(first)
        self._first: dict | None = first["update"]
        #: seconds between two updates at least, as the server took it
        self.interval: float = first.get("interval")
        if self._conn is not None:
            self._conn.settimeout(None)  # updates come when something changed: maybe never

    def _recv_or_lost(self):
        try:
            return self._recv()
        except StopIteration:  # closed by another thread before it began
            raise self._client._lost(ConnectionLost("closed")) from None

    def __next__(self) -> dict:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        msg = self._recv()
        if isinstance(msg, dict) and "update" in msg:
            return msg["update"]
        self.close()
        raise from_reply(msg)  # an error from the server
