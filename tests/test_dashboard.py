"""`hpcqueue dashboard` and the `watch` request it lives on: the board (pure), the server's
notes of what changed (a Watch on a real Core), updates pushed by a real server without
being asked again, and the app in a real terminal (tmux) against a server with a worker."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
import uuid

import pytest
from conftest import one_clear_line, require_tmux, wait_for

from hpcqueue.access import connect
from hpcqueue.dashboard.board import Board, bar, task_row
from hpcqueue.server.core import Core
from hpcqueue.state import ServerState


def summary(job_id, tasks=10, finished=0, running=0, failed=0, canceled=0, state="running"):
    return {"id": job_id, "name": f"j{job_id}", "state": state, "tasks": tasks,
            "waiting": tasks - finished - running - failed - canceled, "running": running,
            "finished": finished, "failed": failed, "canceled": canceled, "open": False}


def worker(wid, state="running", cpus=4, used=2):
    return {"id": wid, "state": state, "hostname": f"n{wid}", "cpus": cpus, "used_cpus": used,
            "running": used, "finished": 7, "alloc": "1.2" if wid == 2 else None,
            "batch_job": None}


# ------------------------------------------------------------------ the board (pure)

def test_board_merges_updates_and_makes_rows():
    b = Board()
    assert b.apply({"t": 1.0, "jobs": [summary(1), summary(2, tasks=4)],
                    "workers": [worker(1), worker(2)],
                    "server": {"jobs": 2, "workers": 2, "unfinished": 2}}, now=0.0) == {1, 2}
    assert b.apply({"jobs": [summary(1, finished=4)]}, now=2.0) == {1}
    row = b.job_row(1)
    assert row[:3] == ("1", "j1", "running") and row[4] == "4/10" and row[6] == "6"
    assert "40%" in row[3] and row[8] == "ETA 3.00s (2/s)", row  # 2 tasks a second
    assert b.job_row(2)[8] == "ETA -"  # nothing ended yet: no rate
    assert b.worker_row(1)[2:4] == ("4", "2/4 (50%)") and b.worker_row(2)[6] == "1.2"
    b.apply({"workers": [worker(3, cpus=2, used=5)]})  # prefetched: 3 tasks wait on it
    assert b.worker_row(3)[3] == "2/2 (100%) +3 assigned"
    b.apply({"forgotten": [2], "workers": [worker(1, state="lost")],
             "jobs": [summary(1, finished=10, state="finished")]}, now=3.0)
    assert set(b.jobs) == {1} and set(b.workers) == {2, 3}
    assert b.job_row(1)[8] == "done" and "2 job(s), 2 unfinished; 2 worker(s)" in b.status()


def test_board_queue_rows_show_allocations_and_the_latest_decision():
    b = Board()
    q = {"id": 3, "name": "gpu", "state": "paused", "pause_reason": "paused by `alloc pause`",
         "queued": 1, "running": 1, "allocations": 5, "workers": 2,
         "allocs": [{"id": "3.5", "state": "running"}, {"id": "3.4", "state": "queued"},
                    {"id": "3.1", "state": "failed"}],
         "decision": {"t": 0, "submit": 0, "reason": "the backlog is covered", "unfit": 0}}
    b.apply({"queues": [q]})
    assert b.queue_row(3) == ("3", "gpu", "paused",
                              "1 queued, 1 running of 5: 3.5 running, 3.4 queued", "2")
    assert b.decision(3).startswith("queue gpu: paused (paused by `alloc pause`); ")
    assert b.decision(3).endswith(" the backlog is covered")
    q["decision"] = {"t": 0, "submit": 2, "reason": "r", "unfit": ["job 1 asks 64 cpus"]}
    b.apply({"queues": [q]})
    assert b.decision(3).endswith(" submit 2: r; job 1 asks 64 cpus")
    b.apply({"queues": []})
    assert b.queues == {}


def test_bar_and_task_rows():
    assert bar(0, 0, width=4) == "████ 100%" and bar(1, 4, width=4) == "█░░░  25%"
    done = {"id": 7, "state": "failed", "worker": 3, "start": 10.0, "end": 12.5,
            "exit_code": 2, "retries": 1}
    assert task_row(done, now=100.0) == ("7", "failed (retry 1)", "3", "2.50s", "2")
    running = {"id": 8, "state": "running", "worker": 3, "start": 10.0, "end": None,
               "exit_code": None}
    assert task_row(running, now=11.0)[3:] == ("1.00s", "")
    assert task_row({"id": 9, "state": "waiting"}, now=0) == ("9", "waiting", "", "", "")


# ------------------------------------------------------------------ the server's notes

def test_watch_notes_what_events_touch_without_looking_at_tasks():
    from hpcqueue.server.watch import Watch

    async def main():
        core = Core(ServerState())
        core.submit({"kind": "cmd", "cmd": ["true"], "ids": [[1, 1_000_000, 1]]})
        core.submit({"kind": "cmd", "cmd": ["true"], "ids": [[1, 3, 1]]})
        w = Watch(core, recent=1)
        first = w.first()  # the most recent job, and every unfinished one
        assert [j["id"] for j in first["jobs"]] == [1, 2] and first["queues"] == []
        assert first["jobs"][0]["waiting"] == 1_000_000
        core.watches.append(w)
        core.record({"e": "worker", "id": 1, "info": {"cpus": 2}, "t": 1.0})
        core.record({"e": "start", "w": 1, "tasks": [2, [0, 1]], "t": 1.0})
        assert w.dirty.is_set()
        up = w.take()
        assert not w.dirty.is_set()
        assert [j["id"] for j in up["jobs"]] == [2] and up["jobs"][0]["running"] == 2
        assert [r["id"] for r in up["workers"]] == [1] and up["workers"][0]["used_cpus"] == 2
        assert "queues" not in up and up["server"]["unfinished"] == 2
        core.record({"e": "done", "w": 1, "r": [[2, 0, 0, 0, 1.0, 2.0, None]], "t": 2.0})
        assert [j["finished"] for j in w.take()["jobs"]] == [1]
        # a lost worker names no job: the unfinished ones are looked at again
        core.record({"e": "wgone", "id": 1, "reason": "gone", "crash": True, "t": 3.0})
        up = w.take()
        assert [j["id"] for j in up["jobs"]] == [1, 2] and up["jobs"][1]["waiting"] == 2
        assert up["workers"][0]["state"] == "lost"
        core.cancel([1, 2])
        assert [j["state"] for j in w.take()["jobs"]] == ["canceled", "canceled"]
        core.record({"e": "forget", "ids": [1], "t": 4.0})
        up = w.take()
        assert up["forgotten"] == [1] and up["server"] == {"jobs": 1, "workers": 0,
                                                           "unfinished": 0}
        core.record({"e": "wgone", "id": 1, "reason": "x", "crash": True, "t": 5.0})
        assert "jobs" not in w.take()  # nothing unfinished is left to look at

    asyncio.run(main())


# ------------------------------------------------------------------ against a real server

def _watch(cluster, **fields):
    conn = connect(cluster.server_dir, timeout=20)
    conn.send({"op": "watch", **fields})
    first = conn.recv()
    assert first["ok"] and first["watching"], first
    return conn, first["update"]


def _next_update(conn) -> dict:
    msg = conn.recv()
    assert "update" in msg, msg
    return msg["update"]


def test_watch_pushes_updates_without_being_asked_again(cluster):
    cluster.start_server()
    conn, first = _watch(cluster, interval=0.5)
    try:
        assert "jobs" not in first and first["server"]["jobs"] == 0
        cluster.hq("submit", "--array", "1-5", "--stdout", "none", "--", "true")
        up = _next_update(conn)  # pushed: nothing was asked after the watch
        assert [j["id"] for j in up["jobs"]] == [1] and up["jobs"][0]["waiting"] == 5
        cluster.start_worker("--cpus", "2")
        seen, stamps = {}, [up["t"]]
        while seen.get("state") != "finished":
            up = _next_update(conn)
            stamps.append(up["t"])
            for j in up.get("jobs", ()):
                seen = j
        assert seen["finished"] == 5
        # coalesced: never closer together than the interval asked for
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert gaps and min(gaps) >= 0.45, gaps
        # nothing changes: nothing is sent
        conn.settimeout(1.5)
        with pytest.raises(OSError):
            conn.recv()
    finally:
        conn.close()


def test_watch_refuses_bad_options(cluster):
    cluster.start_server()
    conn = connect(cluster.server_dir, timeout=20)
    try:
        conn.send({"op": "watch", "interval": "soon"})
        reply = conn.recv()
        assert not reply["ok"] and "'interval'" in reply["error"], reply
    finally:
        conn.close()


def test_dashboard_needs_a_terminal(cluster):
    cluster.start_server()
    one_clear_line(cluster.hq("dashboard", check=False), "needs a terminal", code=2)


class Terminal:
    """A detached tmux session of a fixed size, on a tmux server of its own."""

    def __init__(self, width=120, height=40):
        self.tmux = require_tmux()
        self.sock = f"hpcq-{uuid.uuid4().hex[:8]}"
        self.run("new-session", "-d", "-x", str(width), "-y", str(height), "-s", "d")

    def run(self, *args):
        return subprocess.run([self.tmux, "-L", self.sock, *args], capture_output=True,
                              text=True, timeout=20, env=dict(os.environ))

    def type(self, *keys):
        self.run("send-keys", "-t", "d", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "d").stdout

    def wait_for(self, *needles, timeout=60, what=None):
        last = [""]

        def shown():
            last[0] = text = self.screen()
            return text if all(n in text for n in needles) else None
        try:
            return wait_for(shown, timeout=timeout, interval=0.1, what=what or repr(needles))
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen:\n{last[0]}") from None

    def close(self):
        self.run("kill-server")


def _dashboard_cmd(cluster) -> str:
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "hpcqueue", "dashboard"])
    return f"HPCQUEUE_SERVER_DIR={shlex.quote(str(cluster.server_dir))} {cmd}; " \
           "echo DASHBOARD-EXIT=$?"


def test_dashboard_in_a_terminal_shows_cancels_and_quits(cluster):
    term = Terminal()
    try:
        cluster.start_server()
        cluster.start_worker("--cpus", "2")
        cluster.hq("submit", "--array", "1-3", "--", "sh", "-c", "echo out-$HPCQUEUE_TASK_ID")
        cluster.hq("submit", "--name", "long", "--array", "1-400", "--stdout", "none", "--",
                   "sleep", "5")
        term.type(_dashboard_cmd(cluster), "Enter")
        text = term.wait_for("long", "/400", "ETA", "3/3", "tasks of job 1", "Cancel job",
                             what="the jobs, their progress and the keys")
        assert "finished" in text and "█" in text, text
        # the first job is selected: its tasks, and the output of its first task
        term.wait_for("stdout of job 1 task 1", "out-1", what="the output of task 1")
        term.wait_for("2/2 (100%)", what="the worker's load")  # its 2 cpus are in use
        term.type("Down")  # select the long job
        term.wait_for("tasks of job 2", what="the tasks of job 2")
        term.type("c")
        term.wait_for("job 2 canceled", what="the cancel's message")
        state = cluster.hq("job", "info", "2", "--output", "json").stdout
        assert '"state": "canceled"' in state, state
        term.wait_for("canceled", what="the job shown canceled")
        term.type("q")
        term.wait_for("DASHBOARD-EXIT=0", timeout=20, what="the dashboard to quit")
    finally:
        cluster.hq("job", "cancel", "all", check=False)
        term.close()


def test_dashboard_with_a_million_tasks(cluster):
    """A job of 1,000,000 tasks (no workers): the watch and the dashboard start at once,
    and the tasks table shows one page of them.  The start-up time is printed (run with
    -s to see it), not asserted: benchmarks/dashboard.py measures it."""
    term = Terminal()
    try:
        cluster.start_server()
        cluster.hq("submit", "--array", "1-1000000", "--stdout", "none", "--", "true")
        t0 = time.monotonic()
        conn, first = _watch(cluster)
        watch_s = time.monotonic() - t0
        conn.close()
        assert [(j["id"], j["waiting"]) for j in first["jobs"]] == [(1, 1_000_000)]
        t0 = time.monotonic()
        term.type(_dashboard_cmd(cluster), "Enter")
        text = term.wait_for("0/1000000", "tasks of job 1 [n: more]", timeout=60,
                             what="the job and its first page of tasks")
        shown_s = time.monotonic() - t0
        assert "1000000" in text and "waiting" in text
        term.type("f")  # running tasks: none, found from the counters without a scan
        term.wait_for("tasks of job 1 (running)", what="the filtered tasks")
        term.type("c")
        term.wait_for("job 1 canceled", "1000000/1000000", what="the cancel, in full width")
        term.type("q")
        term.wait_for("DASHBOARD-EXIT=0", timeout=20, what="the dashboard to quit")
        print(f"\nwatch request: {watch_s:.3f}s; dashboard shown (including its start-up "
              f"and tmux polling): {shown_s:.2f}s")
    finally:
        term.close()


def test_dashboard_pauses_and_resumes_a_queue(cluster):
    """An allocation queue whose workers are too small for the job waiting (so it submits
    nothing): its row shows the latest decision, and the keys pause and resume it."""
    term = Terminal()
    try:
        cluster.start_server()
        cluster.hq("alloc", "add", "local", "--name", "small", "--time-limit", "10m",
                   "--cpus", "2", "--no-dry-run")
        cluster.hq("submit", "--cpus", "64", "--stdout", "none", "--", "true")
        term.type(_dashboard_cmd(cluster), "Enter")
        # the latest decision, as `alloc explain` gives it, wrapped under the queues
        term.wait_for("queue small: active", "no waiting tasks fit this", "cannot run here",
                      what="the queue's latest decision")
        term.type("p")
        term.wait_for("queue 1 is paused", "queue small: paused (paused by `alloc pause`)",
                      what="the queue paused")
        assert '"state": "paused"' in cluster.hq("alloc", "list", "--output", "json").stdout
        term.type("r")
        term.wait_for("queue 1 is active", what="the queue resumed")
        assert '"state": "active"' in cluster.hq("alloc", "list", "--output", "json").stdout
        term.type("q")
        term.wait_for("DASHBOARD-EXIT=0", timeout=20, what="the dashboard to quit")
    finally:
        cluster.hq("job", "cancel", "all", check=False)
        term.close()
