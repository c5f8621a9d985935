"""`worker start --tunnel` and `worker deploy-ssh --tunnel` (hpcqueue/worker/tunnel.py).

The end-to-end tests put workers in a network namespace, `hqtun`, that cannot reach the
server (which listens on 127.0.0.1 only) but can reach an sshd: a veth pair on 10.78.0.0/24
has 10.78.0.1 on this side, where a second sshd with the CI sshd's config and keys
(ci/sshd.sh) listens, and 10.78.0.2 inside, with no other route (even the namespace's
loopback is down).  A HOME made for the test pins that sshd's host key in its known_hosts
and names the CI client key in its ~/.ssh/config.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import hq, require, wait_for

from hpcqueue.exceptions import NoServerError, UsageError
from hpcqueue.worker import tunnel
from hpcqueue.worker.tunnel import Tunnel, TunnelSpec, parse_tunnel

NETNS, VETH_OUT, VETH_IN = "hqtun", "hqtun0", "hqtun1"
OUTSIDE, INSIDE = "10.78.0.1", "10.78.0.2"
SSH_PORT = 2222
SSHD = "/usr/sbin/sshd"
CI_SSHD_CONFIG = Path("/etc/hpcqueue-ci/sshd_config")
CI_HOST_KEY = Path("/etc/hpcqueue-ci/ssh_host_ed25519_key.pub")
CI_CLIENT_KEY = Path("/root/.ssh/hpcqueue_ci_ed25519")
LOCK = Path("/tmp/hpcqueue-test-tunnel.lock")  # one session at a time uses the names
TIMEOUT = 60


# ------------------------------------------------------------- pure: the spec


@pytest.mark.parametrize("text, spec", [
    ("login", TunnelSpec("login")),
    ("me@login", TunnelSpec("login", user="me")),
    ("me@login:2222", TunnelSpec("login", user="me", port=2222)),
    ("10.78.0.1:22", TunnelSpec("10.78.0.1", port=22)),
    ("[::1]", TunnelSpec("::1")),
    ("me@[fe80::1]:2022", TunnelSpec("fe80::1", user="me", port=2022)),
])
def test_tunnel_specs(text, spec):
    assert parse_tunnel(text) == spec


@pytest.mark.parametrize("text, why", [
    (":x", "no host"), ("", "no host"), ("@login", "no user"), ("login:", "port ''"),
    ("login:0", "from 1 to 65535"), ("login:65536", "from 1 to 65535"),
    ("login:ssh", "from 1 to 65535"), ("::1:22", "brackets"), ("[::1", "brackets"),
    ("[::1]22", "brackets"), ("-oProxyCommand=x", "'-'"), ("a host", "a space"),
    ("a@b@login", "'@'"),
])
def test_bad_tunnel_specs_say_why(text, why):
    with pytest.raises(UsageError, match="is not \\[USER@\\]HOST\\[:PORT\\]") as e:
        parse_tunnel(text)
    assert why in str(e.value)


def test_a_spec_prints_as_ssh_takes_it():
    assert str(TunnelSpec("login")) == "login"
    assert str(TunnelSpec("login", user="me", port=2222)) == "ssh://me@login:2222"
    assert str(TunnelSpec("::1", port=22)) == "ssh://[::1]:22"


def test_the_event_loop_runs_while_ssh_connects(monkeypatch):
    """A host that accepts and never speaks SSH: the connection attempt, in a thread, times
    out while the event loop goes on."""
    monkeypatch.setattr(tunnel, "CONNECT_TIMEOUT", 2.0)
    mute = socket.create_server(("127.0.0.1", 0))
    port = mute.getsockname()[1]

    async def main():
        attempt = asyncio.ensure_future(
            Tunnel(TunnelSpec("127.0.0.1", port=port)).open_connection("127.0.0.1", 1, 1024))
        ticks = 0
        while not attempt.done():
            await asyncio.sleep(0.05)
            ticks += 1
        return ticks, attempt.exception()

    try:
        started = time.monotonic()
        ticks, error = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        mute.close()
    assert isinstance(error, NoServerError), error
    assert time.monotonic() - started >= 1.5 and ticks >= 20
    assert "no SSH greeting from the host (timed out)" in str(error)


# ------------------------------------------------------------- clear errors


def ssh_home(tmp_path: Path, known_hosts: str, config: str = "") -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh/known_hosts").write_text(known_hosts)
    (home / ".ssh/config").write_text(config)
    return home


def pinned(*names: str) -> str:
    kind, blob = CI_HOST_KEY.read_text().split()[:2]
    return "".join(f"{name} {kind} {blob}\n" for name in names)


def test_bad_tunnels_fail_in_one_line(cluster, tmp_path):
    require("the CI sshd on 127.0.0.1:2222 (alias hpcq-login)",
            ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "hpcq-login", "true"],
            "bash ci/sshd.sh up")
    cluster.start_server()
    ci = f"root@127.0.0.1:{SSH_PORT}"
    key_config = f"Host 127.0.0.1\n  IdentityFile {CI_CLIENT_KEY}\n"
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)],
                   check=True, timeout=TIMEOUT)
    other = other_key.with_suffix(".pub").read_text().split()
    cases = [  # (worker start options, HOME's known_hosts, HOME's ssh config, exit, words)
        (["--tunnel", ":x"], "", "", 2, "':x' is not [USER@]HOST[:PORT]: no host"),
        (["--tunnel", ci], "", key_config, 1, "is not in ~/.ssh/known_hosts"),
        (["--tunnel", ci], f"[127.0.0.1]:{SSH_PORT} {other[0]} {other[1]}\n", key_config, 1,
         "does not match known_hosts"),
        (["--tunnel", ci], pinned(f"[127.0.0.1]:{SSH_PORT}"), "", 1,
         "SSH authentication to ssh://root@127.0.0.1:2222 failed"),
        (["--tunnel", "root@127.0.0.1:1"], "", "", 1,
         "cannot connect to ssh://root@127.0.0.1:1 over SSH"),
        # the SSH host is fine, but the server is not where it looks (127.0.0.2)
        (["--tunnel", ci, "--server-host", "127.0.0.2"], pinned(f"[127.0.0.1]:{SSH_PORT}"),
         key_config, 1, "is not reachable at 127.0.0.2:"),
    ]
    for args, known, config, code, words in cases:
        home = ssh_home(tmp_path, known, config)
        p = cluster.hq("worker", "start", *args, check=False, timeout=TIMEOUT,
                       env={"HOME": str(home), "SSH_AUTH_SOCK": ""})
        assert p.returncode == code and words in p.stderr, (args, p.stderr)
        errors = [line for line in p.stderr.splitlines() if "error" in line.lower()]
        assert errors == [p.stderr.strip().splitlines()[-1]], (args, p.stderr)
        assert errors[0].startswith("hpcqueue: error: ") and "Traceback" not in p.stderr
    # without the ssh extra
    p = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['fabric'] = None\n"
         "from hpcqueue.cli import main; main()", "worker", "start", "--tunnel", ci],
        capture_output=True, text=True, timeout=TIMEOUT,
        env=dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir)))
    assert p.returncode == 2 and p.stderr.strip() == (
        "hpcqueue: error: --tunnel needs fabric and paramiko: pip install 'hpcqueue[ssh]'")
    # deploy-ssh checks --tunnel before it connects anywhere
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1:1\n")
    p = hq("worker", "deploy-ssh", hosts, "--tunnel", "me@", server_dir=cluster.server_dir,
           check=False, timeout=TIMEOUT)
    assert p.returncode == 2 and "'me@' is not [USER@]HOST[:PORT]" in p.stderr
    assert "over SSH" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------- a network namespace


def run(*cmd, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def state(pid: int) -> str:
    """The state letter of a process ("R", "S", "T" stopped, "Z"), "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def kill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Sshd:
    """An sshd in the foreground, with the CI sshd's config but its own address."""

    def __init__(self, tmp: Path, address: str, netns: str | None = None, extra=()):
        self.tmp, self.address, self.netns, self.extra = tmp, address, netns, list(extra)
        self.name = f"sshd-{address}"
        self.proc: subprocess.Popen | None = None
        # the CI config without its address and pid file (-o adds a ListenAddress, and the
        # CI sshd holds 127.0.0.1:2222)
        lines = [line for line in CI_SSHD_CONFIG.read_text().splitlines()
                 if line.split()[:1] not in (["ListenAddress"], ["PidFile"])]
        self.config = tmp / f"{self.name}.config"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        log = self.tmp / f"{self.name}.log"
        before = log.read_text().count("Server listening") if log.exists() else 0
        cmd = [SSHD, "-D", "-f", str(self.config), "-E", str(log),
               "-o", f"ListenAddress={self.address}:{SSH_PORT}",
               "-o", f"PidFile={self.tmp / self.name}.pid", *self.extra]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: log.exists() and log.read_text().count("Server listening") > before,
                 timeout=15, what=f"{self.name} to listen")

    def connections(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc else []

    def kill_connections(self) -> None:
        """Kill the per-connection sshd processes; the listener reaps them and goes on."""
        pids = self.connections()
        assert pids, f"{self.name} has no connection to kill"
        kill(pids)
        wait_for(lambda: not set(pids) & set(self.connections()), timeout=15,
                 what=f"{self.name}'s connections to end")

    def stop(self) -> None:
        """Stop the listener (so that it accepts nothing more), kill its connections, then
        let it reap them and end; a connection's process outlives a listener killed first."""
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            os.kill(pid, signal.SIGSTOP)
            wait_for(lambda: self.proc.poll() is not None or state(pid) in ("T", "Z", ""),
                     timeout=10, what=f"{self.name} to stop")
        kill(self.connections())
        if self.proc.poll() is None:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class Net:
    """The namespace, the sshd at 10.78.0.1, and a HOME that trusts it."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        tmp.mkdir()
        self.sshd = Sshd(tmp, OUTSIDE)
        self.home = ssh_home(
            tmp, pinned(f"[{OUTSIDE}]:{SSH_PORT}", f"[{INSIDE}]:{SSH_PORT}"),
            f"Host 10.78.0.*\n  IdentityFile {CI_CLIENT_KEY}\n  IdentitiesOnly yes\n")
        self.others: list[Sshd] = []

    def up(self) -> None:
        self.down()  # what a killed session may have left (the lock says none runs now)
        run("ip", "netns", "add", NETNS)
        run("ip", "link", "add", VETH_OUT, "type", "veth", "peer", "name", VETH_IN)
        run("ip", "link", "set", VETH_IN, "netns", NETNS)
        run("ip", "addr", "add", f"{OUTSIDE}/24", "dev", VETH_OUT)
        run("ip", "link", "set", VETH_OUT, "up")
        run("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{INSIDE}/24", "dev", VETH_IN)
        run("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_IN, "up")
        self.sshd.start()

    def down(self) -> None:
        for sshd in [*self.others, self.sshd]:
            sshd.stop()
        if Path(f"/run/netns/{NETNS}").exists():
            # everything in the namespace is this test's: sshds, workers, their tasks
            kill(int(pid) for pid in run("ip", "netns", "pids", NETNS).stdout.split())
            run("ip", "netns", "del", NETNS, check=False)
        run("ip", "link", "del", VETH_OUT, check=False)

    def env(self, cluster) -> dict:
        env = dict(os.environ, HOME=str(self.home), HPCQUEUE_SERVER_DIR=str(cluster.server_dir))
        env.pop("SSH_AUTH_SOCK", None)
        return env

    def worker_argv(self, *args) -> list[str]:
        return ["ip", "netns", "exec", NETNS, sys.executable, "-m", "hpcqueue", "worker",
                "start", *args]

    def start_worker(self, cluster, *args, name: str) -> subprocess.Popen:
        log = open(cluster.tmp / name, "ab")
        proc = subprocess.Popen(self.worker_argv(*args), stdout=log, stderr=subprocess.STDOUT,
                                env=self.env(cluster), cwd=cluster.tmp, start_new_session=True)
        cluster.procs.append(proc)
        return proc

    def netns_id(self) -> str:
        return f"net:[{os.stat(f'/run/netns/{NETNS}').st_ino}]"


@pytest.fixture
def net(tmp_path):
    require("root", ["sh", "-c", 'test "$(id -u)" = 0'], "python -m pytest tests/test_tunnel.py")
    require("iproute2 (`ip netns`)", ["ip", "netns", "list"], "apt-get install iproute2")
    require("the CI sshd's config and keys",
            ["test", "-r", str(CI_SSHD_CONFIG), "-a", "-r", str(CI_HOST_KEY), "-a",
             "-r", str(CI_CLIENT_KEY), "-a", "-x", SSHD], "bash ci/sshd.sh up")
    lock = open(LOCK, "w")
    deadline = time.monotonic() + 300
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, f"another test session holds {LOCK}"
            time.sleep(0.5)
    try:
        n = Net(tmp_path / "net")
        try:
            n.up()
            yield n
        finally:
            n.down()
    finally:
        lock.close()


def job(cluster, ref) -> dict:
    return json.loads(cluster.hq("job", "info", ref, "--output", "json").stdout)


def run_tasks(cluster, net, array: str, out: Path) -> None:
    """Tasks that write down their network namespace: it is the worker's, behind SSH."""
    out.mkdir()
    cluster.hq("submit", "--array", array, "--stdout", "none", "--", "sh", "-c",
               f'readlink /proc/self/ns/net > {out}/"$HPCQUEUE_TASK_ID"')
    p = cluster.hq("job", "wait", "last", timeout=TIMEOUT)
    assert "finished" in p.stdout and "failed" not in p.stdout, p.stdout
    seen = {f.read_text().strip() for f in out.iterdir()}
    assert seen == {net.netns_id()}, seen


def running(cluster) -> list[int]:
    return [w["id"] for w in cluster.workers() if w["state"] == "running"]


def test_a_worker_behind_ssh_works_through_a_tunnel(net, cluster):
    cluster.start_server("--heartbeat", "1s")
    assert cluster.access()["host"] == "127.0.0.1"
    # without the tunnel there is no way to the server
    p = subprocess.run(net.worker_argv(), capture_output=True, text=True, timeout=TIMEOUT,
                       env=net.env(cluster))
    assert p.returncode == 1 and "is not reachable at 127.0.0.1" in p.stderr, p.stderr
    assert "Network is unreachable" in p.stderr and "Traceback" not in p.stderr

    tunnel = f"root@{OUTSIDE}:{SSH_PORT}"
    net.start_worker(cluster, "--tunnel", tunnel, "--on-server-lost", "reconnect",
                     name="tunnel.log")
    wait_for(lambda: running(cluster) == [1], timeout=30, what="the worker, through SSH")
    run_tasks(cluster, net, "1-4", cluster.tmp / "first")

    # the sshd process of the tunnel's connection dies: the worker opens the tunnel again
    net.sshd.kill_connections()
    wait_for(lambda: running(cluster) == [2], timeout=30, what="the worker back")
    assert "dropped: opening it again" in cluster.log("tunnel.log")
    run_tasks(cluster, net, "1-4", cluster.tmp / "second")

    # the sshd is gone for a while: the worker retries until it is back
    net.sshd.stop()
    wait_for(lambda: "cannot reach the server" in cluster.log("tunnel.log"), timeout=30,
             what="the worker to find the sshd gone")
    assert "retrying" in cluster.log("tunnel.log")
    net.sshd.start()
    wait_for(lambda: running(cluster) == [3], timeout=30, what="the worker back again")
    run_tasks(cluster, net, "1-2", cluster.tmp / "third")
    assert cluster.log("tunnel.log").count("SSH tunnel open") == 3
    assert "Traceback" not in cluster.log("tunnel.log")

    # without --on-server-lost reconnect, a dropped tunnel is a lost server
    cluster.hq("worker", "stop", "all")
    wait_for(lambda: running(cluster) == [], timeout=30, what="the worker to stop")
    wait_for(lambda: not net.sshd.connections(), timeout=30, what="its SSH connection to end")
    stopper = net.start_worker(cluster, "--tunnel", tunnel, name="stop.log")
    wait_for(lambda: running(cluster) == [4], timeout=30, what="another worker")
    net.sshd.kill_connections()
    assert stopper.wait(timeout=30) == 1
    assert "lost the server" in cluster.log("stop.log")


def test_deploy_ssh_passes_the_tunnel_on(net, cluster):
    """deploy-ssh to an sshd inside the namespace: the worker it starts there reaches the
    server through its own tunnel via 10.78.0.1."""
    inner = Sshd(net.tmp, INSIDE, netns=NETNS, extra=["-o", f"SetEnv HOME={net.home}"])
    net.others.append(inner)
    inner.start()
    cluster.start_server()
    hosts = cluster.tmp / "hosts"
    hosts.write_text(f"{INSIDE}:{SSH_PORT}\n")
    env = net.env(cluster)
    deploy = subprocess.Popen(
        [sys.executable, "-m", "hpcqueue", "worker", "deploy-ssh", str(hosts), "--cpus", "2",
         "--tunnel", f"root@{OUTSIDE}:{SSH_PORT}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    cluster.procs.append(deploy)
    wait_for(lambda: running(cluster) == [1], timeout=30, what="the deployed worker")
    assert cluster.workers()[0]["cpus"] == 2
    run_tasks(cluster, net, "1-3", cluster.tmp / "out")
    cluster.hq("worker", "stop", "all")
    out, _ = deploy.communicate(timeout=30)
    assert deploy.returncode == 0, out
    assert f"[{INSIDE}:{SSH_PORT}]" in out and "SSH tunnel open" in out
