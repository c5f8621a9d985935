"""Waiting for jobs, with an optional live progress bar (pushed by the server)."""

from __future__ import annotations

import click

from hpcqueue.cli.common import check_reply, get_server_dir


def _totals(jobs: list[dict]) -> dict:
    keys = ("tasks", "waiting", "running", "finished", "failed", "canceled")
    return {k: sum(j[k] for j in jobs) for k in keys}


class ProgressBar:
    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.progress import TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def update(self, jobs: list[dict]) -> None:
        t = _totals(jobs)
        done = t["finished"] + t["failed"] + t["canceled"]
        detail = f"{t['running']} running, {t['failed']} failed"
        if self.task is None:
            self.task = self.progress.add_task("tasks", total=t["tasks"], detail=detail)
        self.progress.update(self.task, completed=done, total=t["tasks"], detail=detail)


def wait(ctx: click.Context, jobs, progress: bool, unfinished: bool = False) -> list[dict]:
    """Block until the jobs end; returns their summaries.  UNFINISHED: `all` means the jobs
    unfinished now (`job wait`), not every job the server holds (`job progress`)."""
    from hpcqueue.access import connect

    conn = connect(get_server_dir(ctx), timeout=None)
    try:
        conn.send({"op": "wait", "jobs": jobs, "progress": progress, "unfinished": unfinished})
        if not progress:
            return check_reply(conn.recv())["jobs"]
        with ProgressBar() as bar:
            while True:
                msg = conn.recv()
                if isinstance(msg, dict) and "progress" in msg:
                    bar.update(msg["progress"])
                    continue
                final = check_reply(msg)["jobs"]
                bar.update(final)
                return final
    finally:
        conn.close()


def report(jobs: list[dict]) -> int:
    """Print one line per job; the exit code of `job wait` and `submit --wait`: 0 only if
    every task of the jobs waited for finished, 1 if any failed, was canceled or did not
    end (the jobs waited for are those unfinished when the wait began, for `all`)."""
    if not jobs:
        click.echo("no unfinished job to wait for")
        return 0
    bad = 0
    for j in jobs:
        parts = [f"{j['finished']} finished"]
        if j["failed"]:
            parts.append(f"{j['failed']} failed")
        if j["canceled"]:
            parts.append(f"{j['canceled']} canceled")
        click.echo(f"job {j['id']} {j['state']}: {j['tasks']} tasks, {', '.join(parts)}")
        bad += j["finished"] != j["tasks"]
    return 1 if bad else 0
