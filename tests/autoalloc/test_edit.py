"""`alloc edit`: options of a live queue change, journaled, from the next cycle on.

The unit tests drive the book and the handler in process; the journal tests restart a real
server (replay) and compact its journal (snapshot); the last ones edit a queue on the CI
Slurm and watch the next cycle follow the new backlog.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import msgpack
import pytest
from conftest import one_clear_line, wait_for

from hpcqueue.autoalloc import handlers  # registers the alloc_* handlers
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.exceptions import RequestError
from hpcqueue.journal import snapshot
from hpcqueue.server.core import Core
from hpcqueue.state import ServerState

PARAMS = QueueParams(scheduler="slurm", time_limit=600.0, name="q", partition="cpu")


def added(state: ServerState) -> ServerState:
    state.apply({"e": "aq_add", "id": 1, "params": PARAMS.to_dict(), "t": 1.0})
    return state


# ------------------------------------------------------------------ the book


def test_an_edit_changes_the_params_and_is_kept_for_explain():
    state = added(ServerState())
    state.apply({"e": "aq_edit", "id": 1, "changes": {"backlog": 4, "idle_timeout": 60.0},
                 "t": 2.0})
    q = state.alloc.queues[1]
    assert (q.params.backlog, q.params.idle_timeout, q.params.partition) == (4, 60.0, "cpu")
    assert list(q.edits) == [[2.0, {"backlog": [1, 4], "idle_timeout": [300.0, 60.0]}]]
    state.apply({"e": "aq_edit", "id": 1, "changes": {"backlog": 4}, "t": 3.0})
    assert len(q.edits) == 1  # no change, nothing to say


def test_edits_survive_a_snapshot_and_replay_through_msgpack():
    events = [{"e": "aq_add", "id": 1, "params": PARAMS.to_dict(), "t": 1.0},
              {"e": "aq_edit", "id": 1, "changes": {"max_worker_count": 8}, "t": 2.0},
              {"e": "aq_edit", "id": 1, "changes": {"time_limit": 1200.0}, "t": 3.0}]
    live = ServerState()
    for ev in events:
        live.apply(ev)
    replayed = ServerState()
    for ev in msgpack.unpackb(msgpack.packb(events), raw=False):
        replayed.apply(ev)
    restored = ServerState()
    for ev in msgpack.unpackb(msgpack.packb(snapshot.dump(replayed)), raw=False):
        restored.apply(ev)
    for state in (replayed, restored):
        q = state.alloc.queues[1]
        assert q.params == live.alloc.queues[1].params
        assert list(q.edits) == list(live.alloc.queues[1].edits)
    assert restored.alloc.queues[1].params.max_worker_count == 8
    assert [t for t, _ in restored.alloc.queues[1].edits] == [2.0, 3.0]


class FakeAutoAlloc:
    def __init__(self, tmp_path):
        self.server_dir = tmp_path
        self.pokes = 0
        self.dry_runs = []

    def poke(self):
        self.pokes += 1

    def backend(self, params):
        return None, FakeTransport(self.dry_runs)


class FakeTransport:
    def __init__(self, calls):
        self.calls = calls

    async def submit(self, scheduler, script, cwd, hold=False):
        self.calls.append(("submit", hold, script.read_text()))
        return "77"

    async def cancel(self, scheduler, job_ids):
        self.calls.append(("cancel", job_ids))


@pytest.fixture
def core(tmp_path):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    core = Core(added(ServerState()))
    core.autoalloc = FakeAutoAlloc(tmp_path)
    yield core
    loop.close()
    asyncio.set_event_loop(None)


def edit(core, **req):
    return core.loop.run_until_complete(handlers.alloc_edit(core, {"queue": 1, **req}))


def test_the_handler_changes_editable_options_only(core):
    r = edit(core, changes={"backlog": 3, "keep_dirs": 0}, dry_run=False)
    assert r == {"queue": 1, "changed": {"backlog": [1, 3], "keep_dirs": [20, 0]},
                 "dry_run": False}
    assert core.state.alloc.queues[1].params.backlog == 3 and core.autoalloc.pokes == 1
    for changes, words in [({"partition": "gpu"}, "'partition' cannot be changed"),
                           ({"scheduler": "pbs"}, "cannot be changed"),
                           ({"backlog": 0}, "backlog"),
                           ({"backlog": None}, "needs a value"),
                           ({}, "--backlog"),
                           ({"max_worker_count": 1, "workers_per_alloc": 2}, "cannot be")]:
        with pytest.raises(RequestError, match=words):
            edit(core, changes=changes)
    with pytest.raises(RequestError, match="less than --workers-per-alloc"):
        core.state.alloc.queues[1].params.workers_per_alloc = 2
        edit(core, changes={"max_worker_count": 1})
    assert core.state.alloc.queues[1].params.max_worker_count is None
    assert len(core.state.alloc.queues[1].edits) == 1


def test_a_new_time_limit_is_tried_on_the_scheduler_first(core):
    r = edit(core, changes={"time_limit": 1800.0})
    assert r["dry_run"] and r["changed"] == {"time_limit": [600.0, 1800.0]}
    (kind, hold, script), cancel = core.autoalloc.dry_runs
    assert kind == "submit" and hold and "--time=00:30:00" in script
    assert cancel == ("cancel", ["77"])
    r = edit(core, changes={"backlog": 2})  # a live option: no dry run
    assert not r["dry_run"] and len(core.autoalloc.dry_runs) == 2


# ------------------------------------------------------------------ a real server


def test_edit_is_journaled_and_replayed_by_a_restarted_server(cluster, tmp_path):
    journal = tmp_path / "journal"
    cluster.start_server("--journal", journal)
    cluster.hq("alloc", "add", "local", "--time-limit", "10m", "--name", "here")
    p = cluster.hq("alloc", "edit", "here", "--backlog", "3", "--idle-timeout", "1m",
                   "--pause-after", "5")
    assert p.stdout.strip() == ("queue 1: backlog 1 -> 3, idle timeout 5m00s -> 1m00s, "
                                "pause after 3 -> 5; from the next cycle on")
    p = cluster.hq("alloc", "edit", "here", "--partition", "x", check=False)
    assert p.returncode == 2 and "--partition" in p.stderr
    one_clear_line(cluster.hq("alloc", "edit", "here", check=False), "nothing to change",
                   "--backlog", code=2)
    one_clear_line(cluster.hq("alloc", "edit", "here", "--backlog", "0", check=False),
                   "--backlog", "at least 1", code=2)
    cluster.server.kill()
    cluster.server.wait()
    cluster.start_server("--journal", journal)
    params = json.loads(cluster.hq("alloc", "info", "here", "--output", "json").stdout)["params"]
    assert (params["backlog"], params["idle_timeout"], params["pause_after"]) == (3, 60, 5)
    out = cluster.hq("alloc", "explain", "here").stdout
    assert "backlog 1 -> 3, idle timeout 5m00s -> 1m00s, pause after 3 -> 5" in out
    edits = json.loads(cluster.hq("alloc", "explain", "here", "--output", "json").stdout)["edits"]
    assert edits[0]["changes"]["backlog"] == [1, 3] and edits[0]["t"].startswith("20")


# ------------------------------------------------------------------ the CI Slurm


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return set(out.stdout.split())


def allocs(c) -> list[dict]:
    return json.loads(c.hq("alloc", "info", "1", "--output", "json").stdout)["allocations"]


@pytest.fixture
def slurm_cluster(slurm, cluster):
    yield cluster
    try:
        ids = [a["job_id"] for a in allocs(cluster)]
    except (ValueError, AssertionError, KeyError):
        ids = []
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_edit_changes_the_backlog_of_a_live_queue_on_slurm(slurm_cluster):
    """Allocations that start in an hour stay queued, so the backlog alone limits them: 1,
    then after `alloc edit --backlog 3` the next cycle submits 2 more, with the new idle
    timeout in their scripts and the old one still in the first's."""
    c = slurm_cluster
    c.start_server()
    c.hq("alloc", "add", "slurm", "--partition", "cpu", "--time-limit", "10m", "--backlog", "1",
         "--no-dry-run", "--", "--begin=now+1hour")
    c.hq("submit", "--array", "1-10", "--stdout", "none", "--", "true")
    wait_for(lambda: len(allocs(c)) == 1, timeout=30, what="the first allocation")
    wait_for(lambda: "the backlog is full" in c.hq("alloc", "explain", "1").stdout,
             timeout=30, what="a full backlog")
    time.sleep(3)  # cycles pass: still one
    assert len(allocs(c)) == 1 and allocs(c)[0]["job_id"] in squeue_ids()
    p = c.hq("alloc", "edit", "1", "--backlog", "3", "--idle-timeout", "7s")
    assert "backlog 1 -> 3" in p.stdout
    wait_for(lambda: len(allocs(c)) == 3, timeout=30, what="two more allocations")
    time.sleep(3)
    a = allocs(c)
    assert len(a) == 3 and {x["state"] for x in a} == {"queued"}
    assert {x["job_id"] for x in a} <= squeue_ids()
    assert "--idle-timeout 300s" in c.hq("alloc", "log", a[0]["id"], "script").stdout
    for x in a[1:]:
        assert "--idle-timeout 7s" in c.hq("alloc", "log", x["id"], "script").stdout
    out = c.hq("alloc", "explain", "1").stdout
    assert "backlog 1 -> 3, idle timeout 5m00s -> 7.00s" in out
    assert "3 allocation(s) queued, --backlog 3" in out


def test_a_time_limit_the_partition_refuses_is_not_taken(slurm_cluster):
    c = slurm_cluster
    c.start_server()
    c.hq("alloc", "add", "slurm", "--partition", "debug", "--time-limit", "10m", "--no-dry-run")
    p = c.hq("alloc", "edit", "1", "--time-limit", "2h", check=False)
    one_clear_line(p, "time limit", code=1)
    params = json.loads(c.hq("alloc", "info", "1", "--output", "json").stdout)["params"]
    assert params["time_limit"] == 600
    assert "queue 1: time limit 10m00s -> 20m00s (dry run passed)" in \
        c.hq("alloc", "edit", "1", "--time-limit", "20m").stdout
