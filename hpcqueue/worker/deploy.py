"""`worker deploy-ssh`: start workers on a list of hosts over SSH.

Each worker runs in the foreground of an SSH session with a pty, its output
prefixed by the host.  The command returns when every worker has stopped;
Ctrl-C closes the sessions, and the workers get SIGHUP and leave cleanly.
"""

from __future__ import annotations

import shlex
import sys
import threading

from hpcqueue.exceptions import UsageError


def read_hostfile(path: str) -> list[tuple[str, int | None]]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise UsageError(f"no such host file {path!r}") from None
    except OSError as e:
        raise UsageError(f"cannot read host file {path!r}: {e.strerror}") from None
    hosts = []
    for n, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host, _, port = line.partition(":")
        if " " in host or (port and not port.isdigit()):
            raise UsageError(f"{path}:{n}: {line!r} is not HOST or HOST:PORT")
        hosts.append((host, int(port) if port else None))
    if not hosts:
        raise UsageError(f"host file {path!r} names no hosts")
    return hosts


class _Prefixed:
    """A stream that writes each line as `[host] line`."""

    def __init__(self, host: str, out, lock: threading.Lock):
        self.host, self.out, self.lock = host, out, lock
        self.buf = ""

    def write(self, text: str) -> None:
        self.buf += text.replace("\r\n", "\n")
        *lines, self.buf = self.buf.split("\n")
        with self.lock:
            for line in lines:
                self.out.write(f"[{self.host}] {line}\n")
            self.out.flush()

    def flush(self) -> None:
        pass


def deploy(hosts, command: list[str]) -> int:
    """Run `command` on every host; returns the number of workers that failed."""
    import fabric
    import paramiko

    from hpcqueue.autoalloc.transports.ssh import ssh_error

    lock = threading.Lock()
    conns, failures = [], []

    def one(host: str, port: int | None) -> None:
        name = host if port is None else f"{host}:{port}"
        try:
            conn = fabric.Connection(host, port=port, connect_timeout=15)
            conn.client.load_system_host_keys()
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            conn.open()
            conns.append(conn)
            result = conn.run(shlex.join(command), pty=True, warn=True, in_stream=False,
                              out_stream=_Prefixed(name, sys.stdout, lock))
            if result.exited not in (0, -1):
                failures.append(f"{name}: the worker exited with {result.exited}")
        except (paramiko.SSHException, OSError) as e:
            failures.append(str(ssh_error(name, e)))
        except Exception as e:  # the session was closed under it (Ctrl-C)
            failures.append(f"{name}: {e}")

    threads = [threading.Thread(target=one, args=h, daemon=True) for h in hosts]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        for conn in conns:
            conn.close()
        raise
    for line in failures:
        sys.stderr.write(f"hpcqueue: {line}\n")
    return len(failures)
