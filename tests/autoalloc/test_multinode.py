"""Multi-node allocations on the CI Slurm's partition multi: three nodes, each in network,
UTS and mount namespaces of its own, so each worker is a separate host with its own address
(ci/slurm.sh up --multi)."""

import json
import re
import subprocess

import pytest
from conftest import one_clear_line, wait_for


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return set(out.stdout.split())


@pytest.fixture
def multi(cluster, slurm_multi):
    yield cluster
    ids = []
    try:
        for q in json.loads(cluster.hq("alloc", "list", "--output", "json", check=False).stdout
                            or "[]"):
            info = json.loads(cluster.hq("alloc", "info", str(q["id"]), "--output",
                                         "json").stdout)
            ids += [a["job_id"] for a in info["allocations"]]
    except (ValueError, AssertionError):
        pass
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_three_node_allocation_runs_tasks_on_three_hosts(multi, slurm_multi):
    c = multi
    c.start_server("--host", slurm_multi)  # the last --host wins: one the nodes reach
    p = c.hq("alloc", "add", "slurm", "--partition", "multi", "--workers-per-alloc", "3",
             "--max-worker-count", "3", "--time-limit", "10m", "--idle-timeout", "5s")
    assert "dry run passed" in p.stdout
    assert re.search(rf"probe: 3 node\(s\) of probe job \d+ reached the server at "
                     rf"{re.escape(slurm_multi)}:\d+: n1, n2, n3", p.stdout), p.stdout
    c.hq("submit", "--array", "1-30", "--stdout", "none", "--", "sh", "-c", "sleep 0.5")
    assert "30 finished" in c.hq("job", "wait", "1", timeout=180).stdout
    info = json.loads(c.hq("alloc", "info", "1", "--output", "json").stdout)
    assert len(info["allocations"]) == 1  # --max-worker-count 3: one allocation of three
    job_id = info["allocations"][0]["job_id"]
    workers = json.loads(c.hq("worker", "list", "--all", "--output", "json").stdout)
    assert sorted(w["hostname"] for w in workers) == ["n1", "n2", "n3"]
    assert {w["batch_job"] for w in workers} == {f"slurm:{job_id}"}
    assert {w["alloc"] for w in workers} == {"1.1"}
    host = {w["id"]: w["hostname"] for w in workers}
    tasks = json.loads(c.hq("task", "list", "1", "--output", "json").stdout)
    used = {host[t["worker"]] for t in tasks}
    assert used == {"n1", "n2", "n3"}, [(t["id"], t["worker"]) for t in tasks]
    # the allocation's script started one worker per node through srun
    assert "srun --nodes=3 --ntasks-per-node=1" in c.hq("alloc", "log", "1.1", "script").stdout
    wait_for(lambda: job_id not in squeue_ids() or json.loads(
        c.hq("alloc", "info", "1", "--output", "json").stdout)["allocations"][0]["state"]
        == "finished", timeout=60, what="the allocation to end")


def test_server_the_nodes_cannot_reach_is_refused_at_add(multi):
    c = multi
    c.start_server()  # on 127.0.0.1: each node's 127.0.0.1 is its own loopback
    port = c.access()["port"]
    p = c.hq("alloc", "add", "slurm", "--partition", "multi", "--workers-per-alloc", "3",
             "--time-limit", "10m", check=False, timeout=240)
    one_clear_line(p, f"cannot reach the server at 127.0.0.1:{port}", "0 of 3 node(s)",
                   "Connection refused", "`hpcqueue server start --host ADDRESS`", code=1)
    probe_job = re.search(r"probe job (\d+)", p.stderr).group(1)
    assert probe_job not in squeue_ids()  # ended or cancelled: never left behind
    assert json.loads(c.hq("alloc", "list", "--output", "json").stdout) == []
