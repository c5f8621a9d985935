"""The SSH transport and `worker deploy-ssh`, through real SSH to localhost (ci/sshd.sh)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hq, one_clear_line, wait_for

pytestmark = pytest.mark.usefixtures("sshd")


def allocs(cluster):
    return json.loads(cluster.hq("alloc", "info", "1", "--output", "json").stdout)["allocations"]


def test_slurm_end_to_end_over_ssh(cluster):
    cluster.start_server()
    p = cluster.hq("alloc", "add", "slurm", "--transport", "ssh", "--login-host", "hpcq-login",
                   "--partition", "cpu", "--time-limit", "10m", "--idle-timeout", "3s",
                   "--max-worker-count", "1")
    assert "dry run passed" in p.stdout
    cluster.hq("submit", "--array", "1-10", "--stdout", "none", "--", "true")
    assert "10 finished" in cluster.hq("job", "wait", "1-1000000", timeout=120).stdout
    wait_for(lambda: allocs(cluster) and {a["state"] for a in allocs(cluster)} == {"finished"},
             timeout=60, what="the allocation to end")
    assert allocs(cluster)[0]["reason"] == "completed"


def test_ssh_errors_are_clear(cluster, tmp_path):
    cluster.start_server()
    p = cluster.hq("alloc", "add", "slurm", "--transport", "ssh", "--login-host",
                   "127.0.0.1:1", "--time-limit", "10m", check=False)
    assert p.returncode == 1 and "over SSH" in p.stderr and "Traceback" not in p.stderr
    # `alloc dry-run` runs the same check in this process, so HOME here is what SSH reads
    # a home without known_hosts: the host key is refused, not silently accepted
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = Path("/root/.ssh/hpcqueue_ci_ed25519")
    (home / ".ssh/config").write_text(
        f"Host login\n  HostName 127.0.0.1\n  Port 2222\n  User root\n  IdentityFile {key}\n")
    p = cluster.hq("alloc", "dry-run", "slurm", "--transport", "ssh", "--login-host", "login",
                   "--time-limit", "10m", check=False, env={"HOME": str(home)})
    assert p.returncode == 1 and "not in ~/.ssh/known_hosts" in p.stderr
    (home / ".ssh/config").write_text(
        "Host login\n  HostName 127.0.0.1\n  Port 2222\n  User root\n"
        f"  IdentityFile {home}/.ssh/nokey\n")
    known = subprocess.run(["ssh-keyscan", "-p", "2222", "127.0.0.1"], capture_output=True,
                           text=True).stdout
    (home / ".ssh/known_hosts").write_text(known)
    p = cluster.hq("alloc", "dry-run", "slurm", "--transport", "ssh", "--login-host", "login",
                   "--time-limit", "10m", check=False, env={"HOME": str(home),
                                                            "SSH_AUTH_SOCK": ""})
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "nokey" in p.stderr or "authentication" in p.stderr


def test_deploy_ssh_one_host(cluster, tmp_path):
    cluster.start_server()
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the CI login node\nhpcq-login\n")
    env = dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir))
    deploy = subprocess.Popen(
        [sys.executable, "-m", "hpcqueue", "worker", "deploy-ssh", str(hostfile), "--cpus", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    cluster.procs.append(deploy)
    wait_for(lambda: len(cluster.workers()) == 1, timeout=30, what="the deployed worker")
    cluster.hq("submit", "--array", "1-20", "--stdout", "none", "--", "true")
    assert "20 finished" in cluster.hq("job", "wait", "1-1000000", timeout=60).stdout
    cluster.hq("worker", "stop", "all")
    out, _ = deploy.communicate(timeout=30)
    assert deploy.returncode == 0, out
    assert "[hpcq-login]" in out and "stopped by `worker stop`" in out


def test_deploy_ssh_bad_input(tmp_path):
    p = hq("worker", "deploy-ssh", tmp_path / "nohosts", server_dir=tmp_path, check=False)
    assert p.returncode == 2 and "no such host file" in p.stderr
    (tmp_path / "hosts").write_text("hpcq-login\n")
    p = hq("worker", "deploy-ssh", tmp_path / "hosts", "--cpus", "x", server_dir=tmp_path,
           check=False)
    assert p.returncode == 2 and "--cpus" in p.stderr


@pytest.mark.parametrize("host,command", [
    ("localhost:2222", "ssh -p 2222 localhost"),
    ("root@localhost:2222", "ssh -p 2222 root@localhost"),
    ("ssh://root@127.0.0.1:2222", "ssh -p 2222 root@127.0.0.1"),
    ("[::1]:2222", "ssh -p 2222 ::1"),
    ("hpcq-login", "ssh hpcq-login"),
    ("me@login.site.org", "ssh me@login.site.org"),
])
def test_host_key_hint_is_a_command_ssh_takes(host, command):
    import paramiko

    from hpcqueue.autoalloc.transports.ssh import ssh_error

    e = ssh_error(host, paramiko.SSHException(f"Server '{host}' not found in known_hosts"))
    assert f"connect once with `{command}` to check and accept it" in str(e)


def test_host_key_hint_works_on_a_host_with_a_port(cluster, tmp_path):
    """The hint for `--login-host root@127.0.0.1:2222` is a command that really connects and
    accepts the key; after it, the same `alloc dry-run` gets past the host key."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = Path("/root/.ssh/hpcqueue_ci_ed25519")
    (home / ".ssh/config").write_text(f"Host 127.0.0.1\n  IdentityFile {key}\n")
    env = {"HOME": str(home), "SSH_AUTH_SOCK": ""}
    args = ["alloc", "dry-run", "slurm", "--transport", "ssh", "--login-host",
            "root@127.0.0.1:2222", "--partition", "cpu", "--time-limit", "10m"]
    p = cluster.hq(*args, check=False, env=env)
    one_clear_line(p, "is not in ~/.ssh/known_hosts", code=1)
    command = p.stderr.split("connect once with `")[1].split("`")[0]
    assert command == "ssh -p 2222 root@127.0.0.1"
    # the user's answer "yes", as options; ssh reads the passwd entry's home, not $HOME
    argv = command.split()
    argv[1:1] = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                 "-o", f"UserKnownHostsFile={home}/.ssh/known_hosts", "-i", str(key)]
    ran = subprocess.run([*argv, "echo", "reached"], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0 and ran.stdout.strip() == "reached", ran.stderr
    p = cluster.hq(*args, check=False, env=env)
    assert p.returncode == 0, p.stderr
    assert "dry run passed" in p.stderr
