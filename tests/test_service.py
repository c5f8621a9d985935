"""The server as a service, through the real command line: --daemon and its pid file, log
verbosity and JSON lines, HPCQUEUE_<OPTION> variables, --check-args,
--write-config-defaults, and an instance dir per start."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import hq, one_clear_line, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] != "Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    return lines


def instance_dirs(server_dir) -> list:
    return sorted(p for p in server_dir.iterdir() if p.is_dir() and not p.is_symlink())


# --------------------------------------------------------------------- --daemon


def test_daemon_with_pid_file_detaches_answers_and_stops(cluster, tmp_path):
    pid_file = tmp_path / "server.pid"
    t0 = time.monotonic()
    p = cluster.hq("server", "start", "--daemon", "--pid-file", pid_file, "--host", "127.0.0.1",
                   timeout=30)
    assert p.returncode == 0 and "listening on 127.0.0.1:" in p.stdout
    assert time.monotonic() - t0 < 20
    pid = int(pid_file.read_text())
    assert alive(pid) and pid == cluster.access()["pid"]
    assert stat.S_IMODE(pid_file.stat().st_mode) == 0o644
    assert cluster.hq("job", "list").returncode == 0
    info = json.loads(cluster.hq("server", "info", "--output", "json").stdout)
    assert info["pid_file"] == str(pid_file)
    # no --log-file: the daemon logs into its instance dir
    log = cluster.server_dir / "current" / "server.log"
    assert Path(info["log_file"]).resolve() == log.resolve()
    assert "listening on" in log.read_text()

    # a second daemon with the same pid file is refused while the first runs
    other = tmp_path / "other"
    p = hq("server", "start", "--daemon", "--pid-file", pid_file, "--host", "127.0.0.1",
           server_dir=other, check=False, timeout=30)
    one_clear_line(p, str(pid_file), "names a running server", f"pid {pid}")
    assert int(pid_file.read_text()) == pid

    p = cluster.hq("server", "stop", timeout=40)
    assert "stopped" in p.stdout
    assert not pid_file.exists()  # on return, not some time later
    assert not alive(pid)
    assert "stopped" in log.read_text()


def test_daemon_replaces_a_stale_pid_file_and_reports_a_failed_start(cluster, tmp_path):
    pid_file = tmp_path / "server.pid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    log_file = tmp_path / "daemon.log"
    cluster.hq("server", "start", "--daemon", "--pid-file", pid_file, "--log-file", log_file,
               "--host", "127.0.0.1", timeout=30)
    pid = int(pid_file.read_text())
    assert pid != dead.pid and alive(pid)
    assert "listening on" in log_file.read_text()
    # a daemon that cannot start: the command waits for it and prints its error
    port = cluster.access()["port"]
    p = hq("server", "start", "--daemon", "--host", "127.0.0.1", "--port", port,
           server_dir=tmp_path / "other", check=False, timeout=30)
    assert p.returncode == 1
    one_clear_line(p, f"cannot listen on 127.0.0.1:{port}")
    cluster.hq("server", "stop", timeout=40)
    assert not pid_file.exists() and not alive(pid)


# --------------------------------------------------------------------- logging


def test_json_log_lines_with_debug_lines_for_a_connecting_worker(cluster):
    cluster.start_server("--log-format", "json", "-v")
    worker = cluster._spawn(["worker", "start", "--idle-timeout", "1"], "worker.log",
                            env={"HPCQUEUE_LOG_FORMAT": "json", "HPCQUEUE_VERBOSE": "1"})
    assert worker.wait(timeout=30) == 0
    cluster.hq("server", "stop", timeout=40)
    cluster.server.wait(timeout=10)
    server_lines = json_lines(cluster.log("server.log"))
    debug = [x["message"] for x in server_lines if x["level"] == "DEBUG"]
    assert any(m.startswith("accepted a connection") for m in debug), debug
    assert any(m.startswith("worker hello from") for m in debug), debug
    assert any("said bye" in m for m in debug), debug
    worker_lines = json_lines(cluster.log("worker.log"))
    assert any(x["level"] == "DEBUG" and x["logger"] == "hpcqueue.worker"
               for x in worker_lines), worker_lines
    # the instance's own server.log is JSON too
    instance_log = cluster.server_dir / "current" / "server.log"
    assert json_lines(instance_log.read_text())[-1]["message"].endswith("stopped")


def test_json_lines_for_startup_failures_too(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a journal\n")
    p = hq("server", "start", "--journal", notes, "--host", "127.0.0.1",
           server_dir=tmp_path / "sd", check=False, env={"HPCQUEUE_LOG_FORMAT": "json"})
    assert p.returncode == 1
    lines = json_lines(p.stderr)
    assert lines[-1]["level"] == "ERROR" and "not an hpcqueue journal" in lines[-1]["message"]
    # a bad value, found before anything runs
    p = hq("server", "start", "--log-format", "json", "--port", "x",
           server_dir=tmp_path / "sd", check=False)
    assert p.returncode == 2
    assert "--port" in json_lines(p.stderr)[0]["message"]


def test_vv_logs_every_message(cluster):
    from hpcqueue.cli import logs
    from hpcqueue.server import lifecycle

    assert lifecycle.TRACE == logs.TRACE < logging.DEBUG
    cluster.start_server("-vv")
    cluster.hq("job", "list")
    log = cluster.log("server.log")
    assert " TRACE from " in log and "jobs" in log and " TRACE to " in log


# --------------------------------------------------------------------- environment


def test_port_from_the_environment_a_flag_wins_and_a_bad_value_is_named(cluster):
    port = free_port()
    cluster.start_server(env={"HPCQUEUE_PORT": str(port)})
    assert cluster.access()["port"] == port
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    cluster.hq("server", "stop", timeout=40)
    cluster.server.wait(timeout=10)

    flag_port = free_port()
    cluster.start_server("--port", flag_port, env={"HPCQUEUE_PORT": str(port)})
    assert cluster.access()["port"] == flag_port

    for env, needles in [
        ({"HPCQUEUE_PORT": "eighty"}, ["$HPCQUEUE_PORT='eighty'", "--port"]),
        ({"HPCQUEUE_DAEMON": "maybe"}, ["$HPCQUEUE_DAEMON='maybe'", "--daemon"]),
        ({"HPCQUEUE_HEARTBEAT": "soon"}, ["$HPCQUEUE_HEARTBEAT='soon'", "--heartbeat"]),
    ]:
        p = hq("server", "start", server_dir=cluster.tmp / "unused", env=env, check=False)
        assert p.returncode == 2
        one_clear_line(p, *needles)
    p = hq("worker", "start", server_dir=cluster.tmp / "unused", check=False,
           env={"HPCQUEUE_IDLE_TIMEOUT": "5 parsecs"})
    one_clear_line(p, "$HPCQUEUE_IDLE_TIMEOUT='5 parsecs'", "--idle-timeout")


def test_every_option_of_the_long_running_commands_has_its_variable():
    from hpcqueue.cli import server, worker
    from hpcqueue.cli.envconfig import ACTIONS, RESERVED

    for command in (server.start, worker.start):
        for param in command.params:
            if param.name in ACTIONS or param.name == "help":
                assert not param.envvar
                continue
            long = max(param.opts, key=len)
            assert param.envvar == "HPCQUEUE_" + long.lstrip("-").upper().replace("-", "_")
            assert param.envvar not in RESERVED
    names = {p.envvar for p in server.start.params} | {p.envvar for p in worker.start.params}
    assert {"HPCQUEUE_PORT", "HPCQUEUE_HOST", "HPCQUEUE_JOURNAL", "HPCQUEUE_HTTP_PORT",
            "HPCQUEUE_IDLE_TIMEOUT", "HPCQUEUE_VERBOSE", "HPCQUEUE_DAEMON",
            "HPCQUEUE_SERVER_DIR", "HPCQUEUE_CPUS"} <= names


def test_a_worker_started_inside_a_task_offers_that_tasks_cpus(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    # the inner worker gets no --cpus: it reads $HPCQUEUE_CPUS, the task's 1 CPU (not the
    # 2 of this machine), and finds the server through the $HPCQUEUE_SERVER_DIR it inherits
    cluster.hq("submit", "--cpus", "1", "--stdout", "none", "--stderr", "none", "--",
               sys.executable, "-m", "hpcqueue", "worker", "start", "--idle-timeout", "3")
    inner = wait_for(lambda: [w for w in cluster.workers() if w["id"] == 2],
                     what="the inner worker")
    assert inner[0]["cpus"] == 1
    cluster.hq("job", "wait", "1", timeout=60)


# --------------------------------------------------------------------- --check-args


def test_check_args_passes_good_settings_and_names_a_bad_one(tmp_path):
    sd = tmp_path / "sd"
    p = hq("server", "start", "--check-args", "--host", "127.0.0.1", "--journal",
           tmp_path / "j", server_dir=sd, env={"HPCQUEUE_HEARTBEAT": "3s"})
    assert p.returncode == 0 and "ok:" in p.stdout
    rows = {line.split()[0]: line for line in p.stdout.splitlines() if line.startswith("-")}
    assert rows["--host"].split()[1:] == ["127.0.0.1", "flag"]
    assert rows["--heartbeat"].split()[1:] == ["3s", "environment", "$HPCQUEUE_HEARTBEAT"]
    assert rows["--port"].split()[1:] == ["0", "default"]
    assert not sd.exists() and not (tmp_path / "j").exists()  # nothing made, nothing started

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = hq("server", "start", "--check-args", "--host", "127.0.0.1", "--port", port,
               server_dir=sd, check=False)
    assert p.returncode == 1
    one_clear_line(p, f"cannot listen on 127.0.0.1:{port}")

    p = hq("server", "start", "--check-args", "--http-port", "0", "--http-cert",
           tmp_path / "no-cert.pem", "--log-file", tmp_path / "no-dir" / "s.log",
           server_dir=sd, check=False)
    assert p.returncode == 1
    one_clear_line(p, "--http-cert", "no-cert.pem", "--log-file", "no-dir")
    p = hq("server", "start", "--check-args", server_dir=sd, check=False,
           env={"HPCQUEUE_PORT": "-1"})
    assert p.returncode == 1
    one_clear_line(p, "$HPCQUEUE_PORT='-1'")
    assert not sd.exists()


def test_check_args_refuses_a_dir_with_a_live_server(cluster):
    cluster.start_server()
    p = cluster.hq("server", "start", "--check-args", check=False)
    one_clear_line(p, "already running")


# --------------------------------------------------------------------- --write-config-defaults


def test_write_config_defaults_sourced_in_sh_then_check_args_and_start(cluster, tmp_path):
    p = cluster.hq("server", "start", "--write-config-defaults")
    lines = [x for x in p.stdout.splitlines() if x.strip()]
    exports = [x for x in lines if x.startswith("export ")]
    assert all(x.startswith("#") or x.startswith("export HPCQUEUE_") for x in lines)
    assert "export HPCQUEUE_PORT=0" in exports and "export HPCQUEUE_HEARTBEAT=8s" in exports
    assert f"export HPCQUEUE_SERVER_DIR={shlex.quote(str(cluster.server_dir))}" in exports
    assert any(x.startswith("# export HPCQUEUE_JOURNAL=") for x in lines)
    defaults = tmp_path / "hpcqueue.env"
    defaults.write_text(p.stdout)

    hq_cmd = f"{shlex.quote(sys.executable)} -m hpcqueue"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCQUEUE_")}
    env["HPCQUEUE_TEST_RUN"] = os.environ["HPCQUEUE_TEST_RUN"]
    run = subprocess.run(["sh", "-c", f". {shlex.quote(str(defaults))} && {hq_cmd} server start "
                          "--check-args"], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("-")}
    for var in exports:
        flag = "--" + var.split("=")[0][len("export HPCQUEUE_"):].lower().replace("_", "-")
        assert rows[flag].endswith(f"environment ${var.split('=')[0][len('export '):]}"), \
            rows[flag]

    run = subprocess.run(["sh", "-c", f". {shlex.quote(str(defaults))} && {hq_cmd} server start "
                          "--daemon --host 127.0.0.1"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    cluster.hq("job", "list")
    cluster.hq("server", "stop", timeout=40)


# --------------------------------------------------------------------- instance dirs


def test_two_starts_two_instance_dirs_current_follows_the_second(cluster):
    cluster.start_server()
    first = cluster.access()["server_id"]
    cluster.hq("server", "stop", timeout=40)
    cluster.server.wait(timeout=10)
    cluster.start_server()
    second = cluster.access()["server_id"]
    assert first != second
    dirs = instance_dirs(cluster.server_dir)
    assert [d.name.rsplit("-", 1)[1] for d in dirs] == [first, second]
    assert os.readlink(cluster.server_dir / "current") == dirs[1].name
    assert stat.S_IMODE(dirs[1].stat().st_mode) == 0o700
    assert stat.S_IMODE((dirs[1] / "access.json").stat().st_mode) == 0o600
    old_log = (dirs[0] / "server.log").read_text()
    assert f"server {first} listening" in old_log and f"server {first} stopped" in old_log
    assert not (dirs[0] / "access.json").exists()  # removed at shutdown; the dir stays
    info = json.loads(cluster.hq("server", "info", "--output", "json").stdout)
    assert info["instance_dir"] == str(dirs[1]) and info["server_id"] == second
    assert "instance dir" in cluster.hq("server", "info").stdout


def test_a_plain_access_json_of_an_older_server_is_still_read(cluster, tmp_path):
    cluster.start_server()
    legacy = tmp_path / "legacy"
    legacy.mkdir(mode=0o700)
    (legacy / "access.json").write_text(
        (cluster.server_dir / "current" / "access.json").read_text())
    assert json.loads(hq("server", "info", "--output", "json", server_dir=legacy).stdout)[
        "server_id"] == cluster.access()["server_id"]
    p = hq("server", "start", server_dir=legacy, check=False, timeout=30)
    one_clear_line(p, "already running")
    os.killpg(cluster.server.pid, signal.SIGKILL)
    cluster.server.wait()
    # the old record is stale now: a new server replaces it, and readers follow `current`
    proc = subprocess.Popen([sys.executable, "-m", "hpcqueue", "server", "start", "--host",
                             "127.0.0.1", "--server-dir", str(legacy)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for((legacy / "current" / "access.json").exists, what="the new server")
        assert os.readlink(legacy / "access.json") == "current/access.json"
        hq("job", "list", server_dir=legacy)
        hq("server", "stop", server_dir=legacy, timeout=40)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("verbosity", ["", "-v"])
def test_worker_verbosity_counts(cluster, verbosity):
    cluster.start_server()
    args = ["worker", "start", "--idle-timeout", "0.5"] + ([verbosity] if verbosity else [])
    p = cluster.hq(*args, timeout=30)
    assert ("DEBUG" in p.stderr) == bool(verbosity)
