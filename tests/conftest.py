"""Shared fixtures: a real server and real workers as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


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
        return json.loads((self.server_dir / "access.json").read_text())

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


def require(what: str, cmd: list[str]) -> None:
    """Skip a test without its real peer; in CI (CI=true) that is a failure instead."""
    if _have(cmd):
        return
    message = f"{what} is not available (`{' '.join(cmd)}` failed)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}: CI must bring it up (bash ci/slurm.sh up)", pytrace=False)
    pytest.skip(f"{message}: run `bash ci/slurm.sh up` as root to test against it")


@pytest.fixture(scope="session")
def slurm():
    require("Slurm", ["sinfo", "--noheader"])


PBS_WRAPPERS = "/opt/hpcqueue-ci/pbs/bin"
SGE_ENV = Path(__file__).resolve().parent.parent / "ci" / "sge.env"


@pytest.fixture(scope="session")
def pbs_wrappers(slurm):
    """The environment in which `qsub` is Slurm's PBS wrapper (ci/pbs-wrappers.sh)."""
    require("Slurm's PBS wrappers (bash ci/pbs-wrappers.sh)",
            ["test", "-x", f"{PBS_WRAPPERS}/qsub"])
    return {"PATH": f"{PBS_WRAPPERS}:{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def sge():
    """The environment for Grid Engine's clients and DRMAA (ci/sge.sh, ci/sge.env)."""
    env = {}
    for line in SGE_ENV.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    require("Grid Engine (bash ci/sge.sh up)",
            ["env", *(f"{k}={v}" for k, v in env.items()), "/usr/bin/qstat", "-u", "*"])
    return env


@pytest.fixture(scope="session")
def sshd(slurm):
    require("the CI sshd on 127.0.0.1:2222 (alias hpcq-login)",
            ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "hpcq-login", "true"])
