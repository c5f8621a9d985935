"""Workers: losing one, killing or stopping one (and its reaper), idling out, time left,
batch jobs, reconnecting."""

import json
import os
import signal
import stat
import time
import uuid
from datetime import datetime

from conftest import processes_with, wait_for

from hpcqueue.worker import batch, reaper


def job(cluster, ref="1"):
    return json.loads(cluster.hq("job", "info", ref, "--output", "json").stdout)


def test_lost_worker_tasks_run_elsewhere(cluster):
    cluster.start_server("--heartbeat", "1s")
    doomed = cluster.start_worker("--cpus", "2", name="doomed.log")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    cluster.hq("submit", "--array", "1-4", "--stdout", "none", "--", "sleep", "2")
    wait_for(lambda: job(cluster)["running"] == 2, what="two running tasks")
    os.killpg(doomed.pid, signal.SIGKILL)
    cluster.start_worker("--cpus", "4", name="rescue.log")
    p = cluster.hq("job", "wait", "1", timeout=60)
    assert "4 finished" in p.stdout
    tasks = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    assert sum(t["crashes"] for t in tasks) == 2
    all_workers = json.loads(cluster.hq("worker", "list", "--all", "--output", "json").stdout)
    assert [w["state"] for w in all_workers] == ["lost", "running"]


def cmdline(pid: int) -> str:
    """The command line of a live process; empty for a zombie or a process gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reapers(cluster) -> list[int]:
    return [pid for pid in processes_with("HPCQUEUE_SERVER_DIR", str(cluster.server_dir))
            if "hpcqueue.worker.reaper" in cmdline(pid)]


def test_worker_stop_returns_tasks_without_a_crash(cluster):
    cluster.start_server()
    worker = cluster.start_worker("--cpus", "1")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    mark = uuid.uuid4().hex
    cluster.hq("submit", "--env", f"MARK={mark}", "--stdout", "none", "--", "sleep", "30")
    wait_for(lambda: job(cluster)["running"] == 1, what="a running task")
    assert len(reapers(cluster)) == 1
    assert "stopping 1" in cluster.hq("worker", "stop", "all").stdout
    wait_for(lambda: job(cluster)["waiting"] == 1, what="the task back in the queue")
    info = json.loads(cluster.hq("task", "info", "1", "0", "--output", "json").stdout)
    assert info["crashes"] == 0 and info["state"] == "waiting"
    assert worker.wait(timeout=10) == 0
    assert reapers(cluster) == [] and processes_with("MARK", mark) == []


def test_killed_worker_takes_its_tasks_with_it(cluster):
    cluster.start_server()
    worker = cluster.start_worker("--cpus", "4")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    mark = uuid.uuid4().hex
    cluster.hq("submit", "--array", "1-3", "--env", f"MARK={mark}", "--stdout", "none", "--",
               "sleep", "30")
    cluster.hq("submit", "--env", f"MARK={mark}", "--stdout", "none", "--",
               "bash", "-c", "sleep 30; true")
    # three sleeps, and a bash with its sleep
    tasks = wait_for(lambda: len(processes_with("MARK", mark)) == 5
                     and processes_with("MARK", mark), what="five task processes")
    assert len(reapers(cluster)) == 1
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone: its tasks have sessions of their own
    worker.wait(timeout=10)
    time.sleep(2)
    alive = [(pid, cmdline(pid)) for pid in tasks if cmdline(pid)]
    assert alive == [] and processes_with("MARK", mark) == []
    assert reapers(cluster) == []


def ignored_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))


def test_reaper_records_add_and_remove_groups_in_order():
    pack = reaper.RECORD.pack
    groups: set = set()
    stream = pack(7) + pack(8) + pack(-7) + pack(9) + pack(-8) + pack(7)  # 7 ended, reused
    rest = reaper.apply(groups, stream[:10])
    assert groups == {7, 8} and len(rest) == 2  # half a record waits for the rest
    assert reaper.apply(groups, rest + stream[10:]) == b""
    assert groups == {7, 9}
    assert reaper.apply(groups, pack(-5)) == b"" and groups == {7, 9}  # unknown: ignored


def test_reaper_ignores_signals_and_kills_listed_groups_at_the_end_of_its_pipe():
    import logging
    import subprocess

    link = reaper.Reaper.start(logging.getLogger("test"))
    listed = subprocess.Popen(["sh", "-c", "sleep 30; true"], start_new_session=True)
    ended = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        link.started(listed.pid)
        link.started(ended.pid)
        link.ended(ended.pid)
        wait_for(lambda: ignored_signals(link.proc.pid) & (1 << (signal.SIGTERM - 1)),
                 what="the reaper to start")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(link.proc.pid, sig)
        time.sleep(0.2)
        assert link.proc.poll() is None
        link.close()
        assert link.proc.returncode == 0
        assert listed.wait(timeout=2) == -signal.SIGKILL
        assert ended.poll() is None  # no longer listed: left alone
    finally:
        link.close()
        for p in (listed, ended):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_worker_stopped_past_its_heartbeats_kills_its_tasks_when_it_wakes(cluster):
    cluster.start_server("--heartbeat", "1s")
    worker = cluster.start_worker("--cpus", "2")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    mark = uuid.uuid4().hex
    cluster.hq("submit", "--array", "1-2", "--env", f"MARK={mark}", "--stdout", "none", "--",
               "sleep", "30")
    wait_for(lambda: len(processes_with("MARK", mark)) == 2, what="two task processes")
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: cluster.workers() == [], what="the server to drop the worker")
        assert len(processes_with("MARK", mark)) == 2  # its reaper waits for the worker
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert worker.wait(timeout=10) == 1
    assert processes_with("MARK", mark) == [] and reapers(cluster) == []


def test_idle_timeout_and_time_limit(cluster):
    cluster.start_server()
    idle = cluster.start_worker("--idle-timeout", "1s", name="idle.log")
    limited = cluster.start_worker("--time-limit", "2s", name="limited.log")
    assert idle.wait(timeout=20) == 0
    assert limited.wait(timeout=20) == 0
    assert "idle for 1s" in cluster.log("idle.log")
    assert "time limit reached" in cluster.log("limited.log")


def test_task_that_does_not_fit_the_time_left_is_not_started(cluster):
    cluster.start_server()
    cluster.start_worker("--time-limit", "1h")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    cluster.hq("submit", "--time-request", "2h", "--stdout", "none", "--", "true")
    cluster.hq("submit", "--time-request", "30m", "--stdout", "none", "--", "true")
    cluster.hq("job", "wait", "2", timeout=30)
    time.sleep(0.5)
    assert job(cluster, "1")["state"] == "waiting"
    assert job(cluster, "2")["state"] == "finished"


def test_resources_limit_concurrency(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "4", "--resource", "gpus=1")
    log = tmp_path / "log"
    cluster.hq("submit", "--array", "1-3", "--resource", "gpus=1", "--stdout", "none", "--",
               "sh", "-c", f"echo start >> {log}; sleep 0.3; echo end >> {log}")
    cluster.hq("job", "wait", "1", timeout=30)
    assert log.read_text().split() == ["start", "end"] * 3


def test_task_environment_outputs_and_cwd(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    (tmp_path / "params.txt").write_text("alpha\nbeta\n")
    cluster.hq("submit", "--each-line", "params.txt", "--cpus", "1", "--env", "GREETING=hi",
               "--", "sh", "-c",
               'echo "$GREETING $HPCQUEUE_ENTRY $HPCQUEUE_TASK_ID $HPCQUEUE_CPUS"; echo oops >&2',
               cwd=tmp_path)
    cluster.hq("job", "wait", "1", timeout=30)
    out = tmp_path / "job-1" / "0.stdout"
    assert out.read_text() == "hi alpha 0 1\n"
    assert (tmp_path / "job-1" / "1.stderr").read_text() == "oops\n"
    assert cluster.hq("job", "cat", "1", "stdout").stdout.splitlines() == \
        ["hi alpha 0 1", "hi beta 1 1"]
    assert cluster.hq("job", "cat", "1", "stdout", "--task", "1").stdout == "hi beta 1 1\n"


def test_slurm_time_left_from_one_squeue_call(tmp_path, monkeypatch):
    fake = tmp_path / "squeue"
    fake.write_text("#!/bin/sh\necho \"$@\" >> %s/calls\necho '1-02:00:00'\n" % tmp_path)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("HPCQUEUE_ALLOC_END", raising=False)
    assert batch.batch_job() == ("slurm", "42")
    end = batch.end_time()
    assert abs(end - time.time() - 26 * 3600) < 5
    assert (tmp_path / "calls").read_text().split() == ["-h", "-j", "42", "-o", "%L"]


def test_pbs_time_left(tmp_path, monkeypatch):
    fake = tmp_path / "qstat"
    fake.write_text("#!/bin/sh\ncat <<EOF\nJob Id: 7.server\n    Resource_List.walltime = "
                    "02:00:00\n    resources_used.walltime = 00:30:00\nEOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("PBS_JOBID", "7.server")
    assert abs(batch.end_time() - time.time() - 5400) < 5


def test_task_time_limit_kills_the_process_group(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker()
    marker = tmp_path / "grandchild-survived"
    cluster.hq("submit", "--time-limit", "1s", "--stdout", "none", "--", "sh", "-c",
               f"(sleep 3; touch {marker}) & sleep 30")
    p = cluster.hq("job", "wait", "1", check=False, timeout=30)
    assert p.returncode == 1 and "1 failed" in p.stdout
    info = json.loads(cluster.hq("task", "info", "1", "0", "--output", "json").stdout)
    assert "time limit of 1s exceeded" in info["error"]
    took = datetime.fromisoformat(info["end"]) - datetime.fromisoformat(info["start"])
    assert took.total_seconds() < 5  # (JSON gives times in ISO 8601)
    time.sleep(3.5)
    assert not marker.exists()  # the whole process group went


def test_key_mismatch_fails_at_once_or_is_retried_with_reconnect(cluster):
    cluster.start_server()
    path = cluster.server_dir / "current" / "access.json"
    good = path.read_text()
    record = json.loads(good)
    record["key"] = "00" * 32  # the record of another server, at this server's address
    path.write_text(json.dumps(record))
    p = cluster.hq("worker", "start", check=False, timeout=30)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "rejected our key" in p.stderr

    worker = cluster.start_worker("--on-server-lost", "reconnect", name="reconnect.log")
    wait_for(lambda: "rejected our key" in cluster.log("reconnect.log"), what="a refusal")
    time.sleep(1.0)  # attempts at 0 s and 0.5 s fail; the next comes at 1.5 s
    assert worker.poll() is None
    path.write_text(good)
    wait_for(lambda: len(cluster.workers()) == 1, what="the worker to reconnect")
    assert cluster.log("reconnect.log").count("rejected our key") == 1


def test_every_task_sees_the_id_the_server_gave_its_worker(cluster, tmp_path):
    cluster.start_server()
    for n in range(2):
        cluster.start_worker("--cpus", "1", name=f"worker{n}.log")
    wait_for(lambda: len(cluster.workers()) == 2, what="two workers")
    out = tmp_path / "ids"
    out.mkdir()
    cluster.hq("submit", "--array", "1-6", "--stdout", "none", "--stderr", "none", "--",
               "sh", "-c", f'sleep 0.2; echo "$HPCQUEUE_WORKER_ID" > {out}/$HPCQUEUE_TASK_ID')
    assert "6 finished" in cluster.hq("job", "wait", "1", timeout=60).stdout
    tasks = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    seen = {t["id"]: (out / str(t["id"])).read_text().strip() for t in tasks}
    assert seen == {t["id"]: str(t["worker"]) for t in tasks}
    assert set(seen.values()) == {str(w["id"]) for w in cluster.workers()}
