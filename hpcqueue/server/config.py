"""Server settings: plain values, read once, handed to the server; and the checks of
`server start --check-args`, which look at them without starting anything."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from hpcqueue.calls import DEFAULT_RESULT_LIMIT


@dataclass
class ServerConfig:
    server_dir: Path
    host: str = "0.0.0.0"
    port: int = 0
    journal: Path | None = None
    #: upgrade a journal of an older format in place (keeping a backup) instead of refusing
    journal_upgrade: bool = False
    #: rewrite the journal as a snapshot when its dead weight passes this many bytes
    #: (and half of the file); None never does it by itself
    compact_after: int | None = 64 << 20
    fsync_interval: float = 1.0
    heartbeat: float = 8.0
    #: a worker silent for this many heartbeats is lost
    heartbeat_misses: int = 3
    handshake_timeout: float = 10.0
    write_access: bool = True
    #: how waiting tasks are spread: "first-free" (fill free slots, with prefetch) or
    #: "round-robin" (even over the connected workers)
    dispatch: str = "first-free"
    #: the HTTP API (None: off); it binds http_host, 127.0.0.1 unless told otherwise
    http_port: int | None = None
    http_host: str = "127.0.0.1"
    #: TLS certificate and key for the HTTP API (PEM files)
    http_cert: Path | None = None
    http_key: Path | None = None
    #: serve plain HTTP on an address other than loopback (otherwise TLS is required)
    http_insecure: bool = False
    #: bytes of a function task's result the server keeps; a bigger one goes to a file
    result_limit: int = DEFAULT_RESULT_LIMIT
    #: a file that holds the server's pid while it runs (--pid-file)
    pid_file: Path | None = None
    #: where the log goes, when the command sent it to a file of its choice (--log-file)
    log_file: Path | None = None


# --------------------------------------------------------------------- --check-args


def _writable_dir(path: Path, what: str) -> str | None:
    """A problem if files cannot be made in directory `path`; None if they can."""
    if not path.is_dir():
        return f"{what}: the directory {path} does not exist: create it or give another path"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{what}: the directory {path} is not writable"
    return None


def _creatable_dir(path: Path, what: str) -> str | None:
    """A problem if `path` is neither a writable directory nor creatable."""
    if path.exists():
        if not path.is_dir():
            return f"{what}: {path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{what}: {path} is not writable"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{what}: {path} cannot be created ({parent} is not writable)"
    return None


def _port_problem(host: str, port: int, what: str) -> str | None:
    """A problem if `host`:`port` cannot be bound now (port 0: if the address cannot)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"{what}: the address {host!r} does not resolve ({e.strerror})"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind(addr)
        except OSError as e:
            if port:
                return f"{what}: cannot listen on {host}:{port} ({e.strerror}): give another port"
            return f"{what}: cannot listen on {host} ({e.strerror})"
    return None


def _readable_file(path: Path, what: str) -> str | None:
    if not path.is_file():
        return f"{what}: {path} does not exist"
    if not os.access(path, os.R_OK):
        return f"{what}: {path} is not readable"
    return None


def check(cfg: ServerConfig) -> list[str]:
    """What would stop a server with these settings from starting, one line each; nothing
    is created, bound for longer than the check, or started."""
    from hpcqueue.access import connect, live_server_in_pid_file, read_access
    from hpcqueue.exceptions import HpcqueueError, NoServerError

    problems = [_creatable_dir(cfg.server_dir, "--server-dir")]
    try:
        record = read_access(cfg.server_dir)
        connect(cfg.server_dir, timeout=5).close()
        problems.append(f"--server-dir: a server is already running in {cfg.server_dir} "
                        f"({record.describe()}): stop it with `hpcqueue server stop`, or give "
                        "another --server-dir")
    except (NoServerError, HpcqueueError):
        pass
    if cfg.journal is not None:
        if cfg.journal.exists():
            if not cfg.journal.is_file():
                problems.append(f"--journal: {cfg.journal} is not a file")
            elif not os.access(cfg.journal, os.R_OK | os.W_OK):
                problems.append(f"--journal: {cfg.journal} is not readable and writable")
        else:
            problems.append(_writable_dir(cfg.journal.parent, "--journal"))
    problems.append(_port_problem(cfg.host, cfg.port, "--host/--port"))
    if cfg.http_port is not None:
        problems.append(_port_problem(cfg.http_host, cfg.http_port, "--http-host/--http-port"))
    if cfg.http_cert is not None:
        problems.append(_readable_file(cfg.http_cert, "--http-cert"))
    if cfg.http_key is not None:
        problems.append(_readable_file(cfg.http_key, "--http-key"))
    if cfg.log_file is not None:
        problems.append(_writable_dir(cfg.log_file.parent, "--log-file"))
    if cfg.pid_file is not None:
        problems.append(_writable_dir(cfg.pid_file.parent, "--pid-file"))
        pid = live_server_in_pid_file(cfg.pid_file)
        if pid is not None:
            problems.append(f"--pid-file: {cfg.pid_file} names a running server (pid {pid})")
    return [p for p in problems if p]
