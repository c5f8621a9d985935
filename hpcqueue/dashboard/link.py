"""The dashboard's one door to the server: an :class:`hpcqueue.Client`, its pushed
:meth:`~hpcqueue.Client.updates`, and the few requests the keys make."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from hpcqueue.exceptions import OutputUnreadable, RequestError

if TYPE_CHECKING:
    from hpcqueue.client import Client
    from hpcqueue.watch import Updates

REQUEST_TIMEOUT = 20.0  # seconds a request of the dashboard may take


class ServerLink:
    """Talks to the server of a client (made with a REQUEST_TIMEOUT).  Every method but
    `updates` is one request and may raise HpcqueueError (the app shows its message)."""

    def __init__(self, client: Client):
        self.client = client
        self._updates: Updates | None = None  # the pushed stream, once open

    # ------------------------------------------------------------- the stream

    def open_watch(self, interval: float | None = None) -> dict:
        """Start watching; returns the first update (everything).  Raises at once when the
        server cannot be reached, before any screen is drawn."""
        self._updates = self.client.updates(interval)
        return next(self._updates)

    def updates(self) -> Iterator[dict]:
        """The updates pushed by the server after the first, until `close` ends the stream
        (ServerUnreachable if the server goes away)."""
        return self._updates

    def close(self) -> None:
        """End the stream (a thread reading it stops) and the client's connection."""
        if self._updates is not None:
            self._updates.close()
        self.client.close()

    # ------------------------------------------------------------- requests

    def task_page(self, job: int, states: list[str] | None, after: int, limit: int) -> dict:
        """One page of a job's tasks (never the whole job): {"rows", "next", "counts"}."""
        from hpcqueue.listing import page_rows

        page = self.client.request("tasks", job=job, filter=states or None, after=after,
                                   limit=limit)
        return {"rows": page_rows(page), "next": page.get("next"), "counts": page["counts"]}

    def task_output(self, job: int, task: int, stream: str, tail: int) -> str:
        """The last TAIL lines a task wrote to STREAM, as `job cat --task --tail` prints
        them, with a line about what could not be read."""
        from hpcqueue.views import Job

        try:
            data, problem = Job(self.client, job).task(task).output(stream, tail), None
        except OutputUnreadable as e:
            data, problem = e.data, str(e)
        except RequestError as e:  # e.g. the job kept no stdout
            return f"({e})"
        text = data.decode(errors="replace")
        return text + (f"\n({problem})" if problem else "")

    def cancel_job(self, job: int) -> list[int]:
        return self.client.cancel(job)

    def pause_queue(self, queue: int) -> str:
        return self.client.request("alloc_pause", queue=queue)["state"]

    def resume_queue(self, queue: int) -> str:
        return self.client.request("alloc_resume", queue=queue)["state"]
