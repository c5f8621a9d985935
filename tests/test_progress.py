"""Progress (`job progress`, `job wait --progress`, `submit --progress`): the ETA and the
lines shown (pure), the live display in a real terminal (tmux), plain lines through a pipe."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import uuid

import pytest
from conftest import require_tmux, wait_for

from hpcqueue.progress import ProgressBar, Rate, shown_jobs


def summary(job_id, tasks=10, finished=0, running=0, assigned=0, state=None):
    waiting = tasks - finished - running - assigned
    return {"id": job_id, "tasks": tasks, "waiting": waiting, "running": running,
            "assigned": assigned, "finished": finished, "failed": 0, "canceled": 0,
            "state": state or ("finished" if finished == tasks else "running"), "open": False}


def test_rate_and_eta_over_a_sliding_window():
    r = Rate(window=10)
    assert r.eta(5) is None  # nothing observed yet
    for t in range(0, 31):
        r.add(float(t), 2 * t if t <= 20 else 40)  # 2 tasks a second, then none
        if t == 20:
            assert r.per_second() == pytest.approx(2.0)
            assert r.eta(10) == pytest.approx(5.0)
    assert r.per_second() == pytest.approx(0.0, abs=0.25)  # the window forgot the rate
    assert r.eta(0) == 0.0


def test_lines_are_capped_most_recent_unfinished_first():
    jobs = [summary(i, finished=10) for i in range(1, 991)]
    jobs += [summary(i, finished=3) for i in range(991, 1001)]
    jobs += [summary(1001, finished=1)] + [summary(5, finished=2)]
    jobs = [j for j in jobs if not (j["id"] == 5 and j["finished"] == 10)]
    shown = [j["id"] for j in shown_jobs(jobs)]
    assert len(shown) == 10 and 1001 in shown and 5 not in shown and 1 not in shown
    bar = ProgressBar(live=False, stream=io.StringIO())
    bar.update(jobs)
    labels = [label for label, _, _ in bar.lines()]
    assert labels[-1] == "total" and labels[-2].startswith("and 991 more job(s), 2 unfinished")


def test_plain_lines_without_a_terminal():
    out = io.StringIO()
    with ProgressBar(live=False, interval=3600, stream=out) as bar:
        bar.update([summary(1, finished=2, running=2, assigned=4), summary(2)])
        bar.update([summary(1, finished=3, running=2, assigned=4), summary(2)])  # held back
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert len(lines) == 6, text  # the first update, then the end: 2 jobs and a total each
    assert "job 1: 2/10 ended, 2 running, 4 assigned, 2 waiting" in lines[0]
    assert "total: 3/20 ended" in lines[-1] and "ETA" in lines[-1]


def test_plain_lines_through_a_pipe(cluster):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    cluster.hq("submit", "--array", "1-20", "--stdout", "none", "--", "sleep", "0.05")
    cluster.hq("submit", "--array", "1-5", "--stdout", "none", "--", "true")
    p = cluster.hq("job", "progress", "all", timeout=120)
    assert "\x1b[" not in p.stderr  # no terminal: no escapes, no bar
    lines = p.stderr.splitlines()
    assert any("job 1: " in ln for ln in lines) and any("job 2: " in ln for ln in lines)
    assert "total: 25/25 ended" in lines[-1] and "done" in lines[-1]
    assert "job 1 finished: 20 tasks" in p.stdout


def test_live_progress_in_a_terminal(cluster):
    tmux = require_tmux()
    sock = f"hpcq-{uuid.uuid4().hex[:8]}"  # a tmux server of its own

    def t(*args, **kw):
        return subprocess.run([tmux, "-L", sock, *args], capture_output=True, text=True,
                              timeout=20, **kw)

    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    # short tasks are prefetched: the worker holds more than its 2 cpus run
    for _ in range(12):
        cluster.hq("submit", "--array", "1-60", "--stdout", "none", "--", "sleep", "0.05")
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "hpcqueue", "job",
                                            "progress", "all"])
    env = f"HPCQUEUE_SERVER_DIR={shlex.quote(str(cluster.server_dir))}"
    t("new-session", "-d", "-x", "120", "-y", "30", "-s", "p", env=dict(os.environ))
    try:
        t("send-keys", "-t", "p", f"{env} {cmd}", "Enter")

        def screen():
            text = t("capture-pane", "-p", "-t", "p").stdout
            return text if ("assigned" in text and "ETA " in text and "/s)" in text) else None

        text = wait_for(screen, timeout=60, interval=0.3, what="assigned tasks and an ETA")
        rows = text.splitlines()
        assert sum(1 for r in rows if r.startswith("job ")) == 10, text
        assert any("and 2 more job(s)" in r for r in rows), text
        assert any(r.startswith("total ") and "/720" in r for r in rows), text
    finally:
        cluster.hq("job", "cancel", "all", check=False)
        t("kill-server")
