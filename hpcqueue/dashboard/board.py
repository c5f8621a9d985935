"""What the dashboard shows, as plain values: the `watch` updates merged in, and the rows of
each table made from them.  Pure (the clock is passed in), so it is tested without a screen."""

from __future__ import annotations

import time

from hpcqueue.progress import Rate, eta_text
from hpcqueue.model import format_duration

BAR_WIDTH = 16  # characters of a job's progress bar
ENDED = ("finished", "failed", "canceled")

JOB_COLUMNS = ("id", "name", "state", "progress", "ended", "running", "waiting", "failed",
               "rate / ETA")
TASK_COLUMNS = ("task", "state", "worker", "time", "exit")
WORKER_COLUMNS = ("id", "host", "cpus", "load", "tasks", "done", "alloc")
QUEUE_COLUMNS = ("id", "name", "state", "allocations", "workers")


def ended(job: dict) -> int:
    return job["finished"] + job["failed"] + job["canceled"]


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """A progress bar of block characters, and the percentage."""
    part = done / total if total else 1.0
    full = int(part * width)
    return "█" * full + "░" * (width - full) + f" {int(part * 100):3d}%"


def task_time(row: dict, now: float) -> str:
    """How long a task ran (or has been running), or "" before it started."""
    start = row.get("start")
    if not start:
        return ""
    end = row.get("end") or (now if row["state"] == "running" else None)
    return format_duration(max(0.0, end - start)) if end else ""


class Board:
    """The server as last told: jobs, workers, queues and totals, with a rate per job."""

    def __init__(self) -> None:
        self.jobs: dict[int, dict] = {}
        self.workers: dict[int, dict] = {}
        self.queues: dict[int, dict] = {}
        self.server: dict = {}
        self.rates: dict[int, Rate] = {}
        self.updated: float | None = None  # the server's clock of the last update

    def apply(self, update: dict, now: float | None = None) -> set[int]:
        """Merge an update; returns the ids of the jobs it changed."""
        now = time.monotonic() if now is None else now
        changed = set()
        for job in update.get("jobs", ()):
            self.jobs[job["id"]] = job
            self.rates.setdefault(job["id"], Rate()).add(now, ended(job))
            changed.add(job["id"])
        for j in update.get("forgotten", ()):
            self.jobs.pop(j, None)
            self.rates.pop(j, None)
        for w in update.get("workers", ()):
            if w["state"] == "running":
                self.workers[w["id"]] = w
            else:
                self.workers.pop(w["id"], None)
        if "queues" in update:
            self.queues = {q["id"]: q for q in update["queues"]}
        self.server = update.get("server", self.server)
        self.updated = update.get("t", self.updated)
        return changed

    # ------------------------------------------------------------- rows

    def job_row(self, j: int) -> tuple:
        job = self.jobs[j]
        left = job["tasks"] - ended(job)
        if job["state"] in ENDED and not job.get("open"):
            eta = "done"
        else:
            eta = eta_text(left, self.rates[j])
        return (str(j), job["name"], job["state"] + (" (open)" if job.get("open") else ""),
                bar(ended(job), job["tasks"]), f"{ended(job)}/{job['tasks']}",
                str(job["running"]), str(job["waiting"]), str(job["failed"]), eta)

    def worker_row(self, w: int) -> tuple:
        row = self.workers[w]
        cpus = row["cpus"]
        used = row.get("used_cpus", 0)
        busy = min(used, cpus)  # cpus held beyond its own: tasks assigned, not started
        load = f"{busy}/{cpus} ({100 * busy // max(cpus, 1)}%)" + (
            f" +{used - cpus} assigned" if used > cpus else "")
        return (str(w), row.get("hostname") or "", str(cpus), load, str(row["running"]),
                str(row["finished"]), row.get("alloc") or row.get("batch_job") or "-")

    def queue_row(self, q: int) -> tuple:
        row = self.queues[q]
        live = [f"{a['id']} {a['state']}" for a in row.get("allocs", ())
                if a["state"] in ("queued", "running")][:3]
        allocs = f"{row['queued']} queued, {row['running']} running of {row['allocations']}"
        if live:
            allocs += f": {', '.join(live)}"
        return (str(q), row.get("name") or "", row["state"], allocs, str(row["workers"]))

    def decision(self, q: int) -> str:
        """The queue's state and latest decision (what `alloc explain` shows last), whole."""
        row = self.queues[q]
        head = f"queue {row.get('name') or q}: {row['state']}"
        if row.get("pause_reason"):
            head += f" ({row['pause_reason']})"
        d = row.get("decision")
        if d is None:
            return head + "; no decision yet"
        when = time.strftime("%H:%M:%S", time.localtime(d["t"]))
        what = f"submit {d['submit']}: {d['reason']}" if d["submit"] else d["reason"]
        return f"{head}; {when} {what}" + "".join(f"; {u}" for u in d.get("unfit") or ())

    def status(self) -> str:
        s = self.server
        if not s:
            return "waiting for the server..."
        when = time.strftime("%H:%M:%S", time.localtime(self.updated)) if self.updated else "-"
        return (f"{s['jobs']} job(s), {s['unfinished']} unfinished; {s['workers']} worker(s); "
                f"{len(self.queues)} queue(s); updated {when}")


def task_row(row: dict, now: float) -> tuple:
    worker = row.get("worker")
    code = row.get("exit_code")
    state = row["state"] + (f" (retry {row['retries']})" if row.get("retries") else "")
    return (str(row["id"]), state, "" if worker is None else str(worker),
            task_time(row, now), "" if code is None else str(code))
