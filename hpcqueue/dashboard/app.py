"""The dashboard's textual app: four tables (jobs, the tasks of the selected job, workers,
allocation queues), the output of the selected task, and the keys in the footer.

The server pushes updates (`watch`); a thread reads them and hands each to the app, which
merges it into the :class:`~hpcqueue.dashboard.board.Board` and changes only the rows it
touched.  Requests (a page of tasks, a task's output, cancel, pause, resume) run in thread
workers, so the screen never waits for the server."""

from __future__ import annotations

import threading
import time

from textual import work
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Log, Static
from textual.worker import get_current_worker

from hpcqueue.dashboard.board import (
    JOB_COLUMNS,
    QUEUE_COLUMNS,
    TASK_COLUMNS,
    WORKER_COLUMNS,
    Board,
    task_row,
)
from hpcqueue.dashboard.link import ServerLink
from hpcqueue.exceptions import HpcqueueError

TASK_PAGE = 200  # tasks of the selected job asked for at once
OUTPUT_LINES = 200  # last lines of the selected task's output shown
#: the task filters `f` goes through: states asked for (None: every task)
FILTERS = (None, ["running"], ["failed"], ["waiting"], ["finished"])


def _columns(table: DataTable, names) -> DataTable:
    for name in names:
        table.add_column(name, key=name)
    return table


def _sync_row(table: DataTable, key: str, values: tuple) -> None:
    """Add the row KEY, or change the cells of it that differ."""
    if key not in table.rows:
        table.add_row(*values, key=key)
        return
    old = table.get_row(key)
    for (column_key, column), value, was in zip(table.columns.items(), values, old):
        if value != was:
            # a column is widened only when it must be: that looks at every row
            table.update_cell(key, column_key, value,
                              update_width=len(value) > column.content_width)


def _drop_row(table: DataTable, key: str) -> None:
    if key in table.rows:
        table.remove_row(key)


def _cursor_key(table: DataTable) -> str | None:
    if not table.row_count:
        return None
    row = min(max(table.cursor_row, 0), table.row_count - 1)
    return table.ordered_rows[row].key.value


class Dashboard(App):
    """A live view of one server."""

    TITLE = "hpcqueue dashboard"
    CSS = """
    #status { height: 1; background: $primary-background; padding: 0 1; }
    #message { height: 1; padding: 0 1; color: $warning; }
    DataTable, Log { border: round $primary; }
    DataTable:focus, Log:focus { border: round $accent; }
    #jobs { height: 1fr; }
    #middle { height: 1fr; }
    #bottom { height: 10; }
    #middle > *, #bottom > * { width: 1fr; height: 100%; }
    #queues { height: 1fr; }
    #decision { height: 4; padding: 0 1; }
    """
    BINDINGS = [
        ("c", "cancel_job", "Cancel job"),
        ("p", "pause_queue", "Pause queue"),
        ("r", "resume_queue", "Resume queue"),
        ("f", "task_filter", "Task filter"),
        ("n", "next_tasks", "More tasks"),
        ("o", "output_stream", "stdout/stderr"),
        ("q", "quit", "Quit"),
    ]

    def __init__(self, link: ServerLink, first: dict):
        super().__init__()
        self.link = link
        self.first = first
        self.board = Board()
        self.job_id: int | None = None  # the selected job
        self.task_id: int | None = None  # the selected task (of the job)
        self.filter_at = 0  # index in FILTERS
        self.after = 0  # where the page of tasks shown starts (an index of the job)
        self.next_after: int | None = None  # where the next page starts (None: no more)
        self.out_stream = "stdout"
        self.task_rows: dict[str, dict] = {}
        self._pump: threading.Thread | None = None
        self._closing = False

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield _columns(DataTable(id="jobs", cursor_type="row"), JOB_COLUMNS)
        with Horizontal(id="middle"):
            yield _columns(DataTable(id="tasks", cursor_type="row"), TASK_COLUMNS)
            yield Log(id="output", max_lines=OUTPUT_LINES * 2)
        with Horizontal(id="bottom"):
            yield _columns(DataTable(id="workers", cursor_type="row"), WORKER_COLUMNS)
            with Vertical():
                yield _columns(DataTable(id="queues", cursor_type="row"), QUEUE_COLUMNS)
                yield Static(id="decision")
        yield Static(id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#jobs").border_title = "jobs"
        self.query_one("#tasks").border_title = "tasks"
        self.query_one("#output").border_title = "output"
        self.query_one("#workers").border_title = "workers"
        self.query_one("#queues").border_title = "allocation queues"
        self.apply_update(self.first)
        self.query_one("#jobs").focus()
        self._pump = threading.Thread(target=self._read_updates, name="watch", daemon=True)
        self._pump.start()

    def on_unmount(self) -> None:
        self._closing = True
        self.link.close()

    # ------------------------------------------------------------- updates

    def _read_updates(self) -> None:
        """In a thread: the server's updates, handed to the app one by one."""
        why = "the server closed the connection (did it stop?)"
        try:
            for update in self.link.updates():
                if self._closing:
                    return
                self.call_from_thread(self.apply_update, update)
        except HpcqueueError as e:
            why = f"updates stopped: {e}"
        except RuntimeError:  # the app is gone
            return
        if not self._closing:
            try:
                self.call_from_thread(self.say, why)
            except RuntimeError:
                pass

    def apply_update(self, update: dict) -> None:
        board = self.board
        changed = board.apply(update)
        jobs = self.query_one("#jobs", DataTable)
        for j in sorted(changed):
            _sync_row(jobs, str(j), board.job_row(j))
        for j in update.get("forgotten", ()):
            _drop_row(jobs, str(j))
        workers = self.query_one("#workers", DataTable)
        for w in update.get("workers", ()):
            if w["id"] in board.workers:
                _sync_row(workers, str(w["id"]), board.worker_row(w["id"]))
            else:
                _drop_row(workers, str(w["id"]))
        if "queues" in update:
            queues = self.query_one("#queues", DataTable)
            for key in [k.value for k in queues.rows if int(k.value) not in board.queues]:
                queues.remove_row(key)
            for q in sorted(board.queues):
                _sync_row(queues, str(q), board.queue_row(q))
            self._show_decision()
        self.query_one("#status", Static).update(board.status())
        if self.job_id is None or self.job_id not in board.jobs:
            self._select_job(_cursor_key(jobs))
        elif self.job_id in changed:
            self.load_tasks()

    def say(self, text: str) -> None:
        self.query_one("#message", Static).update(text)

    # ------------------------------------------------------------- selection

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if event.data_table.id == "jobs":
            self._select_job(key)
        elif event.data_table.id == "tasks":
            self._select_task(key)
        elif event.data_table.id == "queues":
            self._show_decision()

    def _show_decision(self) -> None:
        """The latest decision of the queue under the cursor, under the queues."""
        key = _cursor_key(self.query_one("#queues", DataTable))
        text = self.board.decision(int(key)) if key is not None else ""
        self.query_one("#decision", Static).update(text)

    def _select_job(self, key: str | None) -> None:
        job = int(key) if key is not None else None
        if job == self.job_id:
            return
        self.job_id, self.task_id = job, None
        self.after, self.next_after = 0, None
        self.query_one("#tasks", DataTable).clear()
        self.task_rows = {}
        self.query_one("#output", Log).clear()
        if job is not None:
            self.load_tasks()

    def _select_task(self, key: str | None) -> None:
        task = int(key) if key is not None else None
        if task != self.task_id:
            self.task_id = task
            self.load_output()

    # ------------------------------------------------------------- tasks and output

    @work(thread=True, exclusive=True, group="tasks")
    def load_tasks(self) -> None:
        job, states, after = self.job_id, FILTERS[self.filter_at], self.after
        if job is None:
            return
        try:
            page = self.link.task_page(job, states, after, TASK_PAGE)
        except HpcqueueError as e:
            page = e
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self.show_tasks, job, after, page)

    def show_tasks(self, job: int, after: int, page) -> None:
        if job != self.job_id or after != self.after:
            return  # the selection moved on meanwhile
        if isinstance(page, HpcqueueError):
            self.say(str(page))
            return
        table = self.query_one("#tasks", DataTable)
        now = time.time()
        rows = {str(r["id"]): r for r in page["rows"]}
        if list(rows) != [k.value for k in table.rows]:
            keep = self.task_id
            table.clear()
            for key, r in rows.items():
                table.add_row(*task_row(r, now), key=key)
            if keep is not None and str(keep) in rows:
                table.move_cursor(row=table.get_row_index(str(keep)))
        else:
            for key, r in rows.items():
                _sync_row(table, key, task_row(r, now))
        selected = str(self.task_id) if self.task_id is not None else None
        if selected in rows and rows[selected] != self.task_rows.get(selected):
            self.load_output()  # the selected task moved on: its output may have grown
        self.task_rows = rows
        self.next_after = page["next"]
        states = FILTERS[self.filter_at]
        table.border_title = (
            f"tasks of job {job}" + (f" ({', '.join(states)})" if states else "")
            + (f", from index {after}" if after else "")
            + (" [n: more]" if page["next"] is not None else ""))

    @work(thread=True, exclusive=True, group="output")
    def load_output(self) -> None:
        job, task, stream = self.job_id, self.task_id, self.out_stream
        if job is None or task is None:
            return
        try:
            text = self.link.task_output(job, task, stream, OUTPUT_LINES)
        except HpcqueueError as e:
            text = f"({e})"
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self.show_output, job, task, stream, text)

    def show_output(self, job: int, task: int, stream: str, text: str) -> None:
        if (job, task, stream) != (self.job_id, self.task_id, self.out_stream):
            return
        log = self.query_one("#output", Log)
        log.border_title = f"{stream} of job {job} task {task}"
        log.clear()
        log.write(text if text else "(nothing written)")

    # ------------------------------------------------------------- keys

    def action_task_filter(self) -> None:
        self.filter_at = (self.filter_at + 1) % len(FILTERS)
        self.after, self.next_after = 0, None
        self.load_tasks()

    def action_next_tasks(self) -> None:
        if self.next_after is None:
            self.after = 0  # back to the first page
        else:
            self.after = self.next_after
        self.load_tasks()

    def action_output_stream(self) -> None:
        self.out_stream = "stderr" if self.out_stream == "stdout" else "stdout"
        self.load_output()

    def action_cancel_job(self) -> None:
        if self.job_id is None:
            self.say("no job selected")
        else:
            self._request(f"cancel job {self.job_id}", self.link.cancel_job, self.job_id,
                          lambda ids: f"job {ids[0]} canceled" if ids
                          else "nothing to cancel: the job has ended")

    def action_pause_queue(self) -> None:
        self._queue_request("pause", self.link.pause_queue)

    def action_resume_queue(self) -> None:
        self._queue_request("resume", self.link.resume_queue)

    def _queue_request(self, what: str, call) -> None:
        key = _cursor_key(self.query_one("#queues", DataTable))
        if key is None:
            self.say("no allocation queue to " + what)
            return
        queue = int(key)
        self._request(f"{what} queue {queue}", call, queue,
                      lambda state: f"queue {queue} is {state}")

    @work(thread=True, group="requests")
    def _request(self, what: str, call, arg, done) -> None:
        try:
            text = done(call(arg))
        except HpcqueueError as e:
            text = f"{what}: {e}"
        self.call_from_thread(self.say, text)
