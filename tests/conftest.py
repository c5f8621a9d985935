"""Shared fixtures: a real server and real workers as subprocesses.

Every process the tests start inherits ``HPCQUEUE_TEST_RUN`` (one value per session), also
through Slurm, which exports the submitter's environment.  At the end of the session any
process still carrying it is a leak: it is listed, killed, and the session fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

RUN_MARKER = "HPCQUEUE_TEST_RUN"
os.environ[RUN_MARKER] = uuid.uuid4().hex
LEAK_GRACE = 5.0  # seconds a process may take to end after the last test


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    return dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if item)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def processes_with(key: str, value: str) -> list[int]:
    """Live processes (not this one, not zombies) whose environment has KEY=VALUE."""
    want = (key.encode(), value.encode())
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if _environ(pid).get(want[0]) == want[1] and _cmdline(pid):
            out.append(pid)
    return out


def kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a process started by the tests outlives it."""
    marker = os.environ[RUN_MARKER]
    deadline = time.monotonic() + LEAK_GRACE
    while (left := processes_with(RUN_MARKER, marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    lines = "\n".join(f"  {pid}: {_cmdline(pid)[:200]}" for pid in left)
    kill_all(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = (f"{len(left)} process(es) started by the tests outlived the session "
               f"(now killed):\n{lines}")
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def hq(*args, server_dir=None, check=True, input=None, timeout=60, cwd=None, env=None):
    """Run `hpcqueue ARGS` and return the CompletedProcess."""
    full_env = dict(os.environ)
    if server_dir is not None:
        full_env["HPCQUEUE_SERVER_DIR"] = str(server_dir)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "hpcqueue", *map(str, args)], capture_output=True, text=True,
        input=input, timeout=timeout, cwd=cwd, env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"hpcqueue {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def one_clear_line(p, *needles, code=None):
    """P (a finished command) failed (with exit CODE, if given) with one line on stderr, no
    traceback, naming NEEDLES."""
    if code is None:
        assert p.returncode != 0
    else:
        assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    """A server dir with a server and workers running as subprocesses."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.server_dir = tmp_path / "server"
        self.procs: list[subprocess.Popen] = []
        self.server: subprocess.Popen | None = None

    def _spawn(self, args, log_name, env=None):
        env = dict(os.environ, **(env or {}), HPCQUEUE_SERVER_DIR=str(self.server_dir))
        log = open(self.tmp / log_name, "ab")
        proc = subprocess.Popen([sys.executable, "-m", "hpcqueue", *map(str, args)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=self.tmp, start_new_session=True)
        self.procs.append(proc)
        return proc

    def access(self) -> dict:
        """The live server's access record: in the instance dir that `current` names."""
        return json.loads((self.server_dir / "current" / "access.json").read_text())

    def start_server(self, *args, wait=True, env=None):
        old = None
        if (self.server_dir / "access.json").exists():
            old = self.access()["server_id"]
        self.server = self._spawn(["server", "start", "--host", "127.0.0.1", *args],
                                  "server.log", env=env)

        def up():
            if self.server.poll() is not None:
                raise AssertionError("server exited:\n" + self.log("server.log"))
            try:
                return self.access()["server_id"] != old
            except (OSError, ValueError, KeyError):
                return False

        if wait:
            wait_for(up, what="the server's access record")
        return self.server

    def start_worker(self, *args, name="worker.log"):
        return self._spawn(["worker", "start", *args], name)

    def hq(self, *args, **kw):
        return hq(*args, server_dir=self.server_dir, **kw)

    def log(self, name) -> str:
        try:
            return (self.tmp / name).read_text()
        except OSError:
            return ""

    def workers(self) -> list[dict]:
        return json.loads(self.hq("worker", "list", "--output", "json").stdout)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # what the server started on its own (local allocations and their workers) runs in
        # sessions of its own, and finds the server through the server dir it inherited
        kill_all(processes_with("HPCQUEUE_SERVER_DIR", str(self.server_dir)))


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def _have(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tmux() -> str:
    """tmux's path, for the tests that drive a screen in a real terminal; without it the
    test is skipped, except in CI (CI=true), where that is a failure."""
    import shutil

    path = shutil.which("tmux")
    if path is None:
        if in_ci():
            pytest.fail("tmux is not installed: CI must install it (apt-get install -y tmux)",
                        pytrace=False)
        pytest.skip("tmux is not installed (apt-get install -y tmux)")
    return path


def require(what: str, cmd: list[str], script: str) -> None:
    """Skip a test without its real peer; in CI (CI=true) that is a failure instead.

    SCRIPT is the command that brings the peer up."""
    if _have(cmd):
        return
    message = f"{what} is not available (`{' '.join(cmd)}` failed)"
    if in_ci():
        pytest.fail(f"{message}: CI must bring it up ({script})", pytrace=False)
    pytest.skip(f"{message}: run `{script}` as root to test against it")


@pytest.fixture(scope="session")
def slurm():
    require("Slurm", ["sinfo", "--noheader"], "bash ci/slurm.sh up")


PBS_WRAPPERS = "/opt/hpcqueue-ci/pbs/bin"
SGE_ENV = Path(__file__).resolve().parent.parent / "ci" / "sge.env"


@pytest.fixture(scope="session")
def pbs_wrappers(slurm):
    """The environment in which `qsub` is Slurm's PBS wrapper (ci/pbs-wrappers.sh)."""
    require("Slurm's PBS wrappers", ["test", "-x", f"{PBS_WRAPPERS}/qsub"],
            "bash ci/pbs-wrappers.sh")
    return {"PATH": f"{PBS_WRAPPERS}:{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def sge():
    """The environment for Grid Engine's clients and DRMAA (ci/sge.sh, ci/sge.env)."""
    env = {}
    for line in SGE_ENV.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    require("Grid Engine",
            ["env", *(f"{k}={v}" for k, v in env.items()), "/usr/bin/qstat", "-u", "*"],
            "bash ci/sge.sh up")
    return env


@pytest.fixture(scope="session")
def sshd(slurm):
    require("the CI sshd on 127.0.0.1:2222 (alias hpcq-login)",
            ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "hpcq-login", "true"],
            "bash ci/sshd.sh up")


@pytest.fixture(scope="session")
def slurm_multi(slurm):
    """Slurm's partition multi: nodes n1..n3, each a host of its own (ci/slurm.sh up --multi)."""
    require("Slurm's multi-node partition (3 nodes)",
            ["sh", "-c", "test \"$(sinfo -h -N -p multi -o %N | sort -u | wc -l)\" -ge 3"],
            "bash ci/slurm.sh up --multi")
    return "10.77.0.1"  # the machine's address on the nodes' bridge
