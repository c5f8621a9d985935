"""Autoalloc against the real Slurm that ci/slurm.sh brings up (and its PBS wrappers)."""

import json
import subprocess

import pytest
from conftest import wait_for

pytestmark = pytest.mark.usefixtures("slurm")


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return set(out.stdout.split())


def allocs(cluster, queue="1"):
    return json.loads(cluster.hq("alloc", "info", queue, "--output", "json").stdout)["allocations"]


@pytest.fixture
def slurm_cluster(cluster):
    yield cluster
    ids = []
    try:
        for q in json.loads(cluster.hq("alloc", "list", "--output", "json", check=False).stdout
                            or "[]"):
            ids += [a["job_id"] for a in allocs(cluster, str(q["id"]))]
    except (ValueError, AssertionError):
        pass
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_allocations_run_tasks_then_end(slurm_cluster):
    c = slurm_cluster
    c.start_server()
    c.hq("alloc", "add", "slurm", "--partition", "cpu", "--time-limit", "10m", "--backlog", "2",
         "--max-worker-count", "2", "--idle-timeout", "5s")
    c.hq("submit", "--array", "1-50", "--stdout", "none", "--", "sh", "-c", "sleep 0.1")
    wait_for(lambda: len(allocs(c)) == 2, what="two allocations")
    job_ids = {a["job_id"] for a in allocs(c)}
    assert job_ids <= squeue_ids() | {a["job_id"] for a in allocs(c) if a["state"] != "queued"}
    p = c.hq("job", "wait", "1-1000000", timeout=120)
    assert "50 finished" in p.stdout
    workers = json.loads(c.hq("worker", "list", "--all", "--output", "json").stdout)
    assert len(workers) == 2 and {w["alloc"] for w in workers} == {"1.1", "1.2"}
    wait_for(lambda: not (job_ids & squeue_ids()), timeout=60, what="squeue to be empty")
    wait_for(lambda: {a["state"] for a in allocs(c)} == {"finished"}, timeout=30,
             what="allocations to be finished")
    assert {a["reason"] for a in allocs(c)} == {"completed"}
    assert len(allocs(c)) == 2  # never more than the limits
    assert "#SBATCH --partition=cpu" in c.hq("alloc", "log", "1.1", "script").stdout


def test_bad_partition_fails_at_once_with_slurms_message(slurm_cluster):
    c = slurm_cluster
    c.start_server()
    p = c.hq("alloc", "add", "slurm", "--partition", "nosuch", "--time-limit", "10m",
             check=False)
    assert p.returncode == 1
    assert "invalid partition specified: nosuch" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert json.loads(c.hq("alloc", "list", "--output", "json").stdout) == []


def test_task_longer_than_the_queue_submits_nothing(slurm_cluster):
    c = slurm_cluster
    c.start_server()
    c.hq("alloc", "add", "slurm", "--partition", "cpu", "--time-limit", "10m")
    c.hq("submit", "--time-request", "2h", "--", "true")
    wait_for(lambda: "--time-request" in c.hq("alloc", "explain", "1").stdout,
             what="a decision")
    out = c.hq("alloc", "explain", "1").stdout
    assert "submit 0" in out and "--time-request 2h00m00s" in out and "--time-limit 10m00s" in out
    assert allocs(c) == []


def test_scancel_is_cancelled_not_a_fault_and_tasks_run_elsewhere(slurm_cluster):
    c = slurm_cluster
    c.start_server()
    c.hq("alloc", "add", "slurm", "--partition", "cpu", "--time-limit", "10m",
         "--max-worker-count", "1", "--cpus", "1", "--idle-timeout", "5s")
    c.hq("submit", "--array", "1-2", "--stdout", "none", "--", "sleep", "4")
    wait_for(lambda: json.loads(c.hq("job", "info", "1", "--output", "json").stdout)
             ["running"] == 1, timeout=60, what="a running task")
    first = allocs(c)[0]
    subprocess.run(["scancel", first["job_id"]], check=True)
    wait_for(lambda: allocs(c)[0]["state"] != "running", timeout=60, what="the cancel")
    a = allocs(c)[0]
    assert a["state"] == "finished" and a["reason"] == "cancelled" and not a["fault"]
    p = c.hq("job", "wait", "1", timeout=120)
    assert "2 finished" in p.stdout
    q = json.loads(c.hq("alloc", "list", "--output", "json").stdout)[0]
    assert q["state"] == "active" and len(allocs(c)) >= 2
    tasks = json.loads(c.hq("task", "list", "1", "--output", "json").stdout)
    assert all(t["crashes"] == 0 for t in tasks)


def test_restart_brings_the_queue_back_and_adopts_a_live_allocation(slurm_cluster, tmp_path):
    c = slurm_cluster
    journal = tmp_path / "journal"
    c.start_server("--journal", journal)
    c.hq("alloc", "add", "slurm", "--partition", "cpu", "--time-limit", "10m",
         "--max-worker-count", "1", "--idle-timeout", "10s")
    c.hq("submit", "--array", "1-3", "--stdout", "none", "--", "sleep", "3")
    wait_for(lambda: len(c.workers()) == 1, timeout=60, what="the allocation's worker")
    job_id = allocs(c)[0]["job_id"]
    c.server.kill()
    c.server.wait()
    c.start_server("--journal", journal)
    q = json.loads(c.hq("alloc", "list", "--output", "json").stdout)
    assert [x["id"] for x in q] == [1] and q[0]["state"] == "active"
    wait_for(lambda: any(w["alloc"] == "1.1" for w in c.workers()), timeout=30,
             what="the worker to reconnect")
    assert job_id in squeue_ids()
    assert "3 finished" in c.hq("job", "wait", "1", timeout=120).stdout
    a = allocs(c)
    assert a[0]["job_id"] == job_id and a[0]["workers"] >= 1
    assert len(a) == 1  # adopted, not replaced


def test_pbs_path_through_the_qsub_wrappers(slurm_cluster, pbs_wrappers):
    c = slurm_cluster
    c.start_server(env=pbs_wrappers)
    c.hq("alloc", "add", "pbs", "--partition", "debug", "--time-limit", "10m",
         "--idle-timeout", "3s")
    c.hq("submit", "--array", "1-5", "--stdout", "none", "--", "true")
    assert "5 finished" in c.hq("job", "wait", "1-1000000", timeout=120).stdout
    wait_for(lambda: {a["state"] for a in allocs(c)} == {"finished"}, timeout=60,
             what="the PBS allocation to end")
    p = c.hq("alloc", "add", "pbs", "--partition", "nosuch", "--time-limit", "10m",
             check=False)
    assert p.returncode == 1 and "invalid partition specified" in p.stderr


def test_efficiency_of_a_finished_queue_matches_the_tasks_times(slurm_cluster):
    from datetime import datetime

    c = slurm_cluster
    c.start_server()
    c.hq("alloc", "add", "slurm", "--partition", "cpu", "--time-limit", "10m", "--cpus", "1",
         "--max-worker-count", "1", "--idle-timeout", "3s")
    c.hq("submit", "--array", "1-8", "--stdout", "none", "--", "sleep", "0.5")
    assert "8 finished" in c.hq("job", "wait", "1", timeout=120).stdout
    wait_for(lambda: allocs(c) and {a["state"] for a in allocs(c)} == {"finished"},
             timeout=60, what="the allocation to end")
    tasks = json.loads(c.hq("task", "list", "1", "--output", "json").stdout)
    ran = sum((datetime.fromisoformat(t["end"]) - datetime.fromisoformat(t["start"]))
              .total_seconds() for t in tasks)
    assert 8 * 0.5 <= ran < 8 * 5
    [q] = json.loads(c.hq("alloc", "efficiency", "--output", "json").stdout)
    assert q["queue"] == 1 and q["unknown_cpus"] == 0
    assert q["core_hours_used"] * 3600 == pytest.approx(ran, abs=1e-3)
    assert 0 < q["fraction_used"] < 1
    assert q["fraction_used"] == pytest.approx(q["core_hours_used"] / q["core_hours_allocated"])
    [a] = q["allocations"]
    assert a["id"] == "1.1" and a["state"] == "finished" and a["cpus"] == 1
    start, end = datetime.fromisoformat(a["started"]), datetime.fromisoformat(a["ended"])
    assert a["wall_seconds"] == pytest.approx((end - start).total_seconds(), abs=1e-3)
    assert a["core_hours_allocated"] * 3600 == pytest.approx(a["wall_seconds"])
    assert a["core_hours_used"] == q["core_hours_used"]
    first = min(datetime.fromisoformat(t["start"]) for t in tasks)
    last = max(datetime.fromisoformat(t["end"]) for t in tasks)
    assert a["idle_before"] == pytest.approx((first - start).total_seconds(), abs=1e-3)
    assert a["idle_after"] == pytest.approx((end - last).total_seconds(), abs=1e-3)
    # the worker waited out --idle-timeout 3s; Slurm's EndTime has whole seconds, so the
    # allocation's end may read up to 1 s early
    assert a["idle_after"] >= 3 - 1 - 0.1
    assert a["wall_seconds"] == pytest.approx(a["idle_before"] + a["idle_after"] + ran,
                                              rel=0.2)  # one 1-cpu worker, tasks in a row
    out = c.hq("alloc", "efficiency", "1").stdout
    assert f"{100 * q['fraction_used']:.1f}%" in out and "core-hours used" in out
    p = c.hq("alloc", "efficiency", "nosuch", check=False)
    assert p.returncode == 1 and "no allocation queue nosuch" in p.stderr
