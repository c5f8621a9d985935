"""A real server: access record, authentication, journal restore."""

import json
import os
import signal
import socket
import stat
import time

from conftest import hq, wait_for


def test_server_dir_and_access_record_are_private(cluster):
    cluster.start_server()
    d = cluster.server_dir
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / "current").st_mode) == 0o700  # the instance dir
    assert stat.S_IMODE(os.stat(d / "current" / "access.json").st_mode) == 0o600
    info = json.loads(cluster.hq("server", "info", "--output", "json").stdout)
    assert info["port"] == cluster.access()["port"]
    assert info["server_id"] == cluster.access()["server_id"]


def test_array_tasks_get_their_ids(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    out = tmp_path / "ids"
    out.mkdir()
    cluster.hq("submit", "--array", "1-1000", "--stdout", "none", "--stderr", "none", "--",
               "sh", "-c",
               f'echo "$HPCQUEUE_JOB_ID $HPCQUEUE_INSTANCE_ID" > {out}/$HPCQUEUE_TASK_ID')
    p = cluster.hq("job", "wait", "1-1000000", timeout=120)
    assert "1000 finished" in p.stdout
    files = sorted(int(f) for f in os.listdir(out))
    assert files == list(range(1, 1001))
    assert (out / "500").read_text() == "1 0\n"


def test_second_server_in_same_dir_is_refused_and_stale_record_named(cluster):
    cluster.start_server()
    p = cluster.hq("server", "start", check=False, timeout=20)
    assert p.returncode != 0 and "already running" in p.stderr
    os.killpg(cluster.server.pid, signal.SIGKILL)
    cluster.server.wait()
    p = cluster.hq("job", "list", check=False)
    assert p.returncode == 1
    assert "stale" in p.stderr and "hpcqueue server start" in p.stderr
    assert "Traceback" not in p.stderr
    cluster.start_server()  # replaces the stale record
    cluster.hq("job", "list")


def test_garbage_peer_is_dropped_and_server_keeps_serving(cluster):
    cluster.start_server()
    port = cluster.access()["port"]
    for payload in (os.urandom(4096), b"GET / HTTP/1.0\r\n\r\n", b"HPCQ\x01" + b"\0" * 48):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.recv(64)  # the server's hello
            s.sendall(payload)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass  # the server closes on us
            except ConnectionResetError:
                pass
    # a peer that connects and says nothing does not block others
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        assert cluster.hq("job", "list").returncode == 0
    finally:
        idle.close()
    assert "does not know the server key" in cluster.log("server.log") or \
        "not an hpcqueue client" in cluster.log("server.log")


def test_wrong_key_is_refused_with_a_clear_line(cluster):
    cluster.start_server()
    record = cluster.access()
    record["key"] = "00" * 32
    (cluster.server_dir / "current" / "access.json").write_text(json.dumps(record))
    p = cluster.hq("job", "list", check=False)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "rejected our key" in p.stderr


def test_kill_9_mid_job_then_restart_finishes_every_task_once(cluster, tmp_path):
    journal = tmp_path / "hpcq.journal"
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster.start_server("--journal", journal)
    cluster.start_worker("--cpus", "4", "--on-server-lost", "reconnect")
    cluster.hq("submit", "--array", "1-300", "--stdout", "none", "--stderr", "none", "--",
               "sh", "-c", f"sleep 0.02; echo $HPCQUEUE_INSTANCE_ID >> {marks}/$HPCQUEUE_TASK_ID")
    wait_for(lambda: len(os.listdir(marks)) >= 60, what="tasks to run")
    os.killpg(cluster.server.pid, signal.SIGKILL)
    cluster.server.wait()
    partial = len(os.listdir(marks))
    assert partial < 300
    cluster.start_server("--journal", journal)
    p = cluster.hq("job", "wait", "1-1000000", timeout=120)
    assert "300 finished" in p.stdout
    info = json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
    assert info["finished"] == 300 and info["tasks"] == 300
    tasks = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    assert len(tasks) == 300 and {t["state"] for t in tasks} == {"finished"}
    assert len({t["id"] for t in tasks}) == 300
    # tasks cut off by the crash ran again with a higher instance id
    assert any(t["instance"] >= 1 for t in tasks)
    assert sorted(int(f) for f in os.listdir(marks)) == list(range(1, 301))
    # job ids carry on
    p = cluster.hq("submit", "--", "true")
    assert "job 2 submitted" in p.stdout


def test_server_stop_removes_the_access_record(cluster):
    cluster.start_server()
    cluster.hq("server", "stop")
    cluster.server.wait(timeout=10)
    assert not (cluster.server_dir / "current" / "access.json").exists()
    assert (cluster.server_dir / "current" / "server.log").exists()  # the instance dir stays
    p = cluster.hq("job", "list", check=False)
    assert "no server in" in p.stderr


def test_journal_flush_and_export(cluster, tmp_path):
    journal = tmp_path / "j"
    cluster.start_server("--journal", journal)
    cluster.hq("submit", "--array", "1-3", "--", "true")
    assert "flushed" in cluster.hq("journal", "flush").stdout
    events = [json.loads(x) for x in hq("journal", "export", journal).stdout.splitlines()]
    assert [e["e"] for e in events][:2] == ["server", "job"]


def test_journal_of_a_running_server_cannot_be_pruned(cluster, tmp_path):
    journal = tmp_path / "j"
    cluster.start_server("--journal", journal)
    p = hq("journal", "prune", journal, check=False)
    assert p.returncode == 1 and "in use by a running server" in p.stderr
    time.sleep(0.1)


def test_unique_key_returns_the_unfinished_job_then_a_new_one(cluster):
    cluster.start_server()
    first = cluster.hq("submit", "--unique", "nightly", "--", "true").stdout
    again = cluster.hq("submit", "--unique", "nightly", "--", "true").stdout
    assert "job 1 submitted" in first
    assert "job 1" in again and "already" in again  # no second job while 1 is unfinished
    jobs = json.loads(cluster.hq("job", "list", "--output", "json").stdout)
    assert [j["id"] for j in jobs] == [1]
    cluster.start_worker()
    cluster.hq("job", "wait", "1", timeout=60)
    assert "job 2 submitted" in cluster.hq("submit", "--unique", "nightly", "--", "true").stdout


def test_named_priorities_order_dispatch_and_bad_names_are_refused(cluster):
    cluster.start_server()
    for prio in ("low", "normal", "high", "7"):
        cluster.hq("submit", "--priority", prio, "--", "true")
    jobs = json.loads(cluster.hq("job", "list", "--output", "json").stdout)
    assert [j["priority"] for j in jobs] == [-100, 0, 100, 7]
    p = cluster.hq("submit", "--priority", "urgent", "--", "true", check=False)
    assert p.returncode == 2 and "high, normal, low" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_bad_progress_interval_is_refused_by_name_and_the_server_keeps_serving(cluster):
    from hpcqueue.access import connect

    cluster.start_server()
    cluster.hq("submit", "--", "true")
    for bad in ("abc", -1, [1]):
        conn = connect(cluster.server_dir)
        try:
            conn.send({"op": "wait", "jobs": "all", "progress": True, "interval": bad})
            reply = conn.recv()
        finally:
            conn.close()
        assert reply["ok"] is False and "'interval'" in reply["error"], reply
    assert json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)["id"] == 1
