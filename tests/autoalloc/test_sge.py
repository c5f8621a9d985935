"""Grid Engine end to end, through qsub/qstat/qdel and through DRMAA (ci/sge.sh)."""

import json
import os
import subprocess

import pytest
from conftest import PBS_WRAPPERS, one_clear_line, wait_for


def allocs(cluster, queue):
    return json.loads(cluster.hq("alloc", "info", queue, "--output", "json").stdout)["allocations"]


@pytest.mark.parametrize("transport", ["cli", "drmaa"])
def test_sge_end_to_end(cluster, sge, transport):
    cluster.start_server(env=sge)
    p = cluster.hq("alloc", "add", "sge", "--transport", transport, "--partition", "all.q",
                   "--time-limit", "10m", "--idle-timeout", "3s", "--max-worker-count", "1",
                   "--name", "ge", env=sge)
    assert "dry run passed" in p.stdout
    cluster.hq("submit", "--array", "1-10", "--stdout", "none", "--", "true")
    assert "10 finished" in cluster.hq("job", "wait", "1-1000000", timeout=120).stdout
    workers = json.loads(cluster.hq("worker", "list", "--all", "--output", "json").stdout)
    assert workers and all(w["batch_job"].startswith("sge:") for w in workers)
    wait_for(lambda: {a["state"] for a in allocs(cluster, "ge")} == {"finished"}, timeout=60,
             what="the allocation to end")
    assert {a["reason"] for a in allocs(cluster, "ge")} == {"completed"}
    assert "#$ -q all.q" in cluster.hq("alloc", "log", "1.1", "script").stdout


@pytest.mark.parametrize("transport,message", [
    ("cli", 'unknown queue "nosuch.q"'),
    ("drmaa", 'DeniedByDrmException: code 17: Job was rejected because job requests unknown '
              'queue "nosuch.q"'),
])
def test_sge_bad_queue_fails_at_add(cluster, sge, transport, message):
    cluster.start_server(env=sge)
    p = cluster.hq("alloc", "add", "sge", "--transport", transport, "--partition", "nosuch.q",
                   "--time-limit", "10m", check=False)
    assert p.returncode == 1 and message in p.stderr and "Traceback" not in p.stderr


def test_drmaa_cancel_is_not_a_fault(cluster, sge):
    cluster.start_server(env=sge)
    cluster.hq("alloc", "add", "sge", "--transport", "drmaa", "--time-limit", "10m",
               "--max-worker-count", "1", "--idle-timeout", "30s")
    cluster.hq("submit", "--stdout", "none", "--", "true")
    wait_for(lambda: allocs(cluster, "1") and allocs(cluster, "1")[0]["workers"] == 1,
             timeout=60, what="the allocation's worker")
    cluster.hq("alloc", "remove", "1", "--force")
    info = json.loads(cluster.hq("alloc", "info", "1", "--output", "json").stdout)
    assert info["state"] in ("draining", "removed")
    wait_for(lambda: allocs(cluster, "1")[0]["state"] == "finished", timeout=60,
             what="the cancelled allocation to end")
    a = allocs(cluster, "1")[0]
    assert a["reason"] == "cancelled" and not a["fault"]


def sge_jobs(sge) -> list[str]:
    out = subprocess.run(["/usr/bin/qstat", "-u", "*"], capture_output=True, text=True,
                         env=dict(os.environ, **sge))
    assert out.returncode == 0, out.stderr
    return [line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()]


def test_alloc_add_pbs_refuses_grid_engines_qsub_and_leaves_no_job(cluster, sge):
    env = dict(sge, PATH=f"/usr/bin:{os.environ['PATH']}")  # Grid Engine's qsub comes first
    assert "invalid option" in subprocess.run(["qsub", "--version"], capture_output=True,
                                              text=True, env=dict(os.environ, **env)).stderr
    before = sge_jobs(sge)
    cluster.start_server(env=env)
    p = cluster.hq("alloc", "add", "pbs", "--time-limit", "10m", check=False, env=env)
    one_clear_line(p, "this qsub is Grid Engine's, not PBS's: use `alloc add sge`", code=1)
    assert sge_jobs(sge) == before
    assert json.loads(cluster.hq("alloc", "list", "--output", "json").stdout) == []
    # and the other way round: Slurm's PBS wrappers are no Grid Engine
    wrappers = dict(sge, PATH=f"{PBS_WRAPPERS}:{os.environ['PATH']}")
    p = cluster.hq("alloc", "dry-run", "sge", "--time-limit", "10m", check=False, env=wrappers)
    one_clear_line(p, "this qsub is Slurm's PBS wrapper, not Grid Engine's: use `alloc add pbs`",
                   code=1)
    assert sge_jobs(sge) == before
