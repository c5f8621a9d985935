"""The dashboard's one door to the server: the `watch` stream and the few requests it makes,
through the same helpers as the CLI (so that it can switch to ``hpcqueue.Client`` later)."""

from __future__ import annotations

import io
import socket
from typing import Iterator

import click

from hpcqueue.access import connect
from hpcqueue.cli.common import check_reply, get_server_dir, request
from hpcqueue.exceptions import HpcqueueError, RequestError

REQUEST_TIMEOUT = 20.0  # seconds a request of the dashboard may take


class ServerLink:
    """Talks to the server of a click context.  Every method but `updates` is one request
    and may raise HpcqueueError (the app shows its message)."""

    def __init__(self, ctx: click.Context):
        self.ctx = ctx
        self._watch = None  # the connection of the `watch` stream, once open

    # ------------------------------------------------------------- the stream

    def open_watch(self, interval: float | None = None) -> dict:
        """Start watching; returns the first update (everything).  Raises at once when the
        server cannot be reached, before any screen is drawn."""
        conn = connect(get_server_dir(self.ctx), timeout=REQUEST_TIMEOUT)
        try:
            conn.send({"op": "watch", "interval": interval})
            first = check_reply(conn.recv())
            conn.settimeout(None)  # updates come when something changed: maybe never
        except BaseException:
            conn.close()
            raise
        self._watch = conn
        return first["update"]

    def updates(self) -> Iterator[dict]:
        """The updates pushed by the server, until it or `close` ends the stream."""
        conn = self._watch
        while True:
            try:
                msg = conn.recv()
            except (OSError, HpcqueueError):
                return
            if isinstance(msg, dict) and "update" in msg:
                yield msg["update"]
            else:
                check_reply(msg)  # an error from the server: raise it

    def close(self) -> None:
        conn, self._watch = self._watch, None
        if conn is not None:
            try:  # wakes the thread blocked reading it
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    # ------------------------------------------------------------- requests

    def _request(self, op: str, **fields) -> dict:
        return request(self.ctx, op, timeout=REQUEST_TIMEOUT, **fields)

    def task_page(self, job: int, states: list[str] | None, after: int, limit: int) -> dict:
        """One page of a job's tasks (never the whole job): {"rows", "next"}."""
        from hpcqueue.listing import page_rows

        page = self._request("tasks", job=job, filter=states or None, after=after, limit=limit)
        return {"rows": page_rows(page), "next": page.get("next"), "counts": page["counts"]}

    def task_output(self, job: int, task: int, stream: str, tail: int) -> str:
        """The last TAIL lines a task wrote to STREAM, as `job cat --task --tail` prints
        them."""
        from hpcqueue.cli.jobs import _cat_files, _cat_streamed

        try:
            reply = self._request("cat", job=job, stream=stream, task=task)
        except RequestError as e:  # e.g. the job kept no stdout
            return f"({e})"
        out = io.BytesIO()
        if "dir" in reply:
            problem = _cat_streamed(out, reply, stream, task, None, tail, False)
        else:
            problem = _cat_files(out, reply["files"], tail)
        text = out.getvalue().decode(errors="replace")
        return text + (f"\n({problem})" if problem else "")

    def cancel_job(self, job: int) -> list[int]:
        return self._request("cancel", jobs=str(job))["canceled"]

    def pause_queue(self, queue: int) -> str:
        return self._request("alloc_pause", queue=queue)["state"]

    def resume_queue(self, queue: int) -> str:
        return self._request("alloc_resume", queue=queue)["state"]
