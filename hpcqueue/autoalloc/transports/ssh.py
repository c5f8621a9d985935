"""The SSH transport: run the scheduler's CLI on a login host, with fabric.

The server runs somewhere that reaches a login node over SSH and runs
sbatch/squeue/scancel there.  It uses the user's ~/.ssh/config and agent.  The
server dir must be visible at the same path on the cluster (a shared file
system): the allocation scripts and the access record live there, and the
workers read them.  Unknown host keys are refused, not silently accepted.
"""

from __future__ import annotations

import asyncio
import shlex
import threading

from hpcqueue.autoalloc.transports.cli import COMMAND_TIMEOUT, CliTransport
from hpcqueue.exceptions import SchedulerError, UsageError


def ssh_command(host: str) -> str:
    """The `ssh` command line that reaches HOST, given as [USER@]HOST[:PORT] (HOST may be
    [IPv6]) or ssh://[USER@]HOST[:PORT]: ssh takes a port only with -p (or in a URI)."""
    user, at, rest = host.removeprefix("ssh://").rpartition("@")
    port = ""
    if rest.startswith("["):
        name, _, after = rest[1:].partition("]")
        port = after[1:]
    elif rest.count(":") == 1:
        name, _, port = rest.partition(":")
    else:
        name = rest
    return shlex.join(["ssh", *(["-p", port] if port else []), f"{user}{at}{name}"])


def ssh_error(host: str, e: Exception) -> SchedulerError:
    """A clear error for an SSH failure: connection, host key or authentication."""
    import paramiko

    name = type(e).__name__
    if isinstance(e, paramiko.BadHostKeyException):
        return SchedulerError(f"the host key of {host} does not match known_hosts (it changed, "
                              f"or this is not {host}): check with your site, then update "
                              "~/.ssh/known_hosts")
    if isinstance(e, paramiko.AuthenticationException):
        return SchedulerError(f"SSH authentication to {host} failed ({e}): check that your key "
                              f"is loaded in the agent or named in ~/.ssh/config for {host}")
    if isinstance(e, paramiko.SSHException) and "known_hosts" in str(e):
        return SchedulerError(f"the host key of {host} is not in ~/.ssh/known_hosts: connect "
                              f"once with `{ssh_command(host)}` to check and accept it")
    if isinstance(e, FileNotFoundError):
        return SchedulerError(f"SSH to {host}: a key file does not exist ({e.filename}): fix "
                              "IdentityFile in ~/.ssh/config")
    if isinstance(e, OSError):
        detail = e.strerror or str(e).replace("[Errno None] ", "")
        return SchedulerError(f"cannot connect to {host} over SSH: {detail}")
    return SchedulerError(f"SSH to {host} failed: {name}: {e}")


class SshRunner:
    """Runs commands on one host over one reused fabric connection."""

    def __init__(self, host: str, connect_timeout: float = 15.0):
        self.host = host
        self.connect_timeout = connect_timeout
        self._conn = None
        self._lock = threading.Lock()

    def _connection(self):
        import fabric
        import paramiko

        if self._conn is None or not self._conn.is_connected:
            conn = fabric.Connection(self.host, connect_timeout=self.connect_timeout)
            # fabric accepts any host key by default and never reads known_hosts: check them
            conn.client.load_system_host_keys()
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            conn.open()
            self._conn = conn
        return self._conn

    def run_blocking(self, argv: list[str], cwd: str | None, timeout: float):
        import paramiko

        cmd = shlex.join(argv)
        if cwd:
            cmd = f"cd {shlex.quote(cwd)} && {cmd}"
        with self._lock:
            try:
                result = self._connection().run(cmd, hide=True, warn=True, timeout=timeout,
                                                in_stream=False)
            except (paramiko.SSHException, OSError) as e:
                self._conn = None
                raise ssh_error(self.host, e) from None
            except Exception as e:  # invoke's CommandTimedOut and friends
                self._conn = None
                raise SchedulerError(f"`{cmd}` on {self.host} failed: {e}") from None
        if result.exited != 0:
            said = " ".join((result.stderr.strip() or result.stdout.strip() or "no output").split())
            raise SchedulerError(f"`{cmd}` on {self.host} failed (exit code {result.exited}): "
                                 f"{said}", command=argv, returncode=result.exited,
                                 stdout=result.stdout, stderr=result.stderr)
        return result.stdout

    async def __call__(self, argv, cwd=None, timeout=COMMAND_TIMEOUT) -> str:
        return await asyncio.to_thread(self.run_blocking, argv, cwd, timeout)


class SshTransport(CliTransport):
    name = "ssh"

    def __init__(self, login_host: str | None = None):
        if not login_host:
            raise UsageError("--transport ssh needs --login-host HOST (a name from your "
                             "~/.ssh/config or a hostname)")
        try:
            import fabric  # noqa: F401
        except ImportError:
            raise UsageError("the ssh transport needs fabric: pip install 'hpcqueue[ssh]'") \
                from None
        super().__init__(runner=SshRunner(login_host))
        self.login_host = login_host
