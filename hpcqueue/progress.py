"""The progress view of jobs (`job progress`, `job wait --progress`,
``Client.wait(progress=True)``): a live line per job, a total and an ETA on a terminal,
plain lines every few seconds without one; and the rate and ETA it shows (also the
dashboard's).  Fed with job summaries as dicts (``JobSummary.as_dict()``, or a `wait`
progress message); rich is imported only when a view is made."""

from __future__ import annotations

import time
from collections import deque

from hpcqueue.model import format_duration


MAX_JOB_LINES = 10  # jobs shown one a line; the rest are "and N more"
ETA_WINDOW = 60.0  # seconds of observed progress the rate (and so the ETA) is taken over
PLAIN_INTERVAL = 10.0  # seconds between the lines printed when there is no terminal
COUNTS = ("tasks", "waiting", "running", "assigned", "finished", "failed", "canceled")


def _totals(jobs: list[dict]) -> dict:
    return {k: sum(j.get(k, 0) for j in jobs) for k in COUNTS}


def _ended(j: dict) -> int:
    return j["finished"] + j["failed"] + j["canceled"]


def shown_jobs(jobs: list[dict], most: int = MAX_JOB_LINES) -> list[dict]:
    """The jobs given a line of their own: the MOST most recent unfinished ones (then the
    most recent ended ones, if there is room), in id order."""
    active = [j for j in jobs if j["state"] in ("waiting", "running") or j.get("open")]
    ended = [j for j in jobs if not (j["state"] in ("waiting", "running") or j.get("open"))]
    pick = sorted(active, key=lambda j: -j["id"])[:most]
    pick += sorted(ended, key=lambda j: -j["id"])[:most - len(pick)]
    return sorted(pick, key=lambda j: j["id"])


class Rate:
    """Tasks ended per second over the last WINDOW seconds, and the time left at that rate."""

    def __init__(self, window: float = ETA_WINDOW):
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, t: float, ended: int) -> None:
        s = self.samples
        if len(s) >= 2 and t - s[-2][0] < 1.0:
            s[-1] = (t, ended)  # the newest moves on: samples stay a second or more apart
        else:
            s.append((t, ended))
        while len(s) > 2 and t - s[1][0] >= self.window:
            s.popleft()

    def per_second(self) -> float | None:
        s = self.samples
        if len(s) < 2 or s[-1][0] <= s[0][0]:
            return None
        return (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])

    def eta(self, left: int) -> float | None:
        """Seconds until LEFT more tasks have ended, or None while nothing has ended."""
        if left <= 0:
            return 0.0
        rate = self.per_second()
        return left / rate if rate else None


def eta_text(left: int, rate: Rate) -> str:
    """"done", "ETA -" while nothing has ended, or the time LEFT tasks take at RATE."""
    if left <= 0:
        return "done"
    eta = rate.eta(left)
    if eta is None:
        return "ETA -"
    per = rate.per_second()
    return f"ETA {format_duration(eta)} ({per:.3g}/s)"


def describe(j: dict) -> str:
    """The counts of a progress line: started and assigned (prefetched) apart."""
    parts = [f"{j.get('running', 0)} running"]
    if j.get("assigned"):
        parts.append(f"{j['assigned']} assigned")
    parts += [f"{j.get('waiting', 0)} waiting", f"{j.get('failed', 0)} failed"]
    if j.get("canceled"):
        parts.append(f"{j['canceled']} canceled")
    return ", ".join(parts)


class ProgressBar:
    """One line per job (the most recent MAX_JOB_LINES), a total line and an ETA, live on a
    terminal; without one (stderr is a file or a pipe), plain lines every PLAIN_INTERVAL
    seconds and at the end.  Fed with job summaries (`wait` progress messages)."""

    def __init__(self, live: bool | None = None, interval: float = PLAIN_INTERVAL,
                 stream=None):
        from rich.console import Console

        self.console = Console(stderr=True, file=stream)
        self.live_mode = self.console.is_terminal if live is None else live
        self.interval = interval
        self.live = None
        self.rates: dict = {}  # job id (or "total") -> Rate
        self.jobs: list[dict] = []
        self.last_print: float | None = None

    def __enter__(self):
        if self.live_mode:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None
        elif self.jobs:
            self._print_plain()

    def update(self, jobs: list[dict]) -> None:
        now = time.monotonic()
        self.jobs = jobs
        for j in jobs:
            self.rates.setdefault(j["id"], Rate()).add(now, _ended(j))
        self.rates.setdefault("total", Rate()).add(now, _ended(_totals(jobs)))
        if self.live is not None:
            self.live.update(self._table())
        elif self.last_print is None or now - self.last_print >= self.interval:
            self._print_plain()

    def lines(self) -> list[tuple[str, dict, str]]:
        """(label, counts, ETA text) of each line: the jobs shown, "and N more", the total."""
        jobs = self.jobs
        shown = shown_jobs(jobs)
        out = [(f"job {j['id']}", j, eta_text(j["tasks"] - _ended(j), self.rates[j["id"]]))
               for j in shown]
        if len(jobs) > len(shown):
            ids = {j["id"] for j in shown}
            rest = [j for j in jobs if j["id"] not in ids]
            busy = sum(1 for j in rest if j["state"] in ("waiting", "running"))
            out.append((f"and {len(rest)} more job(s), {busy} unfinished", None, ""))
        t = _totals(jobs)
        out.append(("total", t, eta_text(t["tasks"] - _ended(t), self.rates["total"])))
        return out

    def _table(self):
        from rich.progress_bar import ProgressBar as Bar
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        for _ in range(5):
            table.add_column()
        for label, c, eta in self.lines():
            if c is None:  # "and N more": under the counts, so the labels stay narrow
                table.add_row("...", "", "", label, "")
                continue
            table.add_row(label, Bar(total=max(c["tasks"], 1), completed=_ended(c), width=30),
                          f"{_ended(c)}/{c['tasks']}", describe(c), eta)
        return table

    def _print_plain(self) -> None:
        self.last_print = time.monotonic()
        stamp = time.strftime("%H:%M:%S")
        for label, c, eta in self.lines():
            if c is None:
                self.console.print(f"{stamp} {label}", highlight=False, soft_wrap=True)
            else:
                self.console.print(f"{stamp} {label}: {_ended(c)}/{c['tasks']} ended, "
                                   f"{describe(c)}, {eta}", highlight=False, soft_wrap=True)
