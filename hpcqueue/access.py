"""The server dir and its access record: where a server is and the key to it.

A server writes ``access.json`` into its server dir: host, port, server id,
pid and the secret key.  The dir is 0700 and the record 0600, so only the user
who started the server can read the key.  Several servers per user work
through different server dirs.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hpcqueue.exceptions import HpcqueueError, NoServerError

ENV_SERVER_DIR = "HPCQUEUE_SERVER_DIR"
DEFAULT_SERVER_DIR = "~/.hpcqueue-server"
ACCESS_FILE = "access.json"


def server_dir(path: str | os.PathLike | None = None) -> Path:
    """The server dir: the argument, else $HPCQUEUE_SERVER_DIR, else the default."""
    raw = path or os.environ.get(ENV_SERVER_DIR) or DEFAULT_SERVER_DIR
    return Path(os.path.expanduser(str(raw))).absolute()


def ensure_private_dir(path: Path) -> Path:
    """Create `path` if needed and make it 0700 (owner only)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if stat.S_IMODE(path.stat().st_mode) != 0o700:
            path.chmod(0o700)
    except OSError as e:
        raise HpcqueueError(f"cannot use server dir {path}: {e.strerror}") from None
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` atomically into a file readable by the owner only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class AccessRecord:
    host: str
    port: int
    server_id: str
    key: str  # hex
    pid: int
    hostname: str
    started: float
    journal: str | None = None
    #: the HTTP API's address (a URL) and bearer token, when it is on
    http_url: str | None = None
    http_token: str | None = None

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.hostname}, started {when}"


def write_access(directory: Path, record: AccessRecord) -> Path:
    ensure_private_dir(directory)
    path = directory / ACCESS_FILE
    write_private_file(path, json.dumps(asdict(record), indent=2).encode())
    return path


def read_access(directory: Path) -> AccessRecord:
    path = directory / ACCESS_FILE
    try:
        data = json.loads(path.read_text())
        return AccessRecord(**data)
    except FileNotFoundError:
        raise NoServerError(
            f"no server in {directory}: start one with `hpcqueue server start`"
        ) from None
    except (OSError, ValueError, TypeError) as e:
        raise NoServerError(
            f"the access record {path} is unreadable ({e}): stop any server using that dir, "
            "delete the file and start a new server with `hpcqueue server start`"
        ) from None


def remove_access(directory: Path, server_id: str) -> None:
    """Remove the access record if it is still ours."""
    path = directory / ACCESS_FILE
    try:
        if json.loads(path.read_text()).get("server_id") == server_id:
            path.unlink()
    except (OSError, ValueError):
        pass


def candidate_hosts(record: AccessRecord) -> list[str]:
    hosts = [record.host]
    if record.hostname == socket.gethostname() and "127.0.0.1" not in hosts:
        hosts.append("127.0.0.1")
    return hosts


def connect(directory: Path, timeout: float | None = 30.0):
    """A :class:`BlockingConnection` to the server of `directory`, or a clear error."""
    from hpcqueue.protocol import BlockingConnection

    record = read_access(directory)
    last: OSError | None = None
    for host in candidate_hosts(record):
        try:
            return BlockingConnection(host, record.port, record.key_bytes, timeout=timeout)
        except OSError as e:
            last = e
    raise NoServerError(
        f"the server in {directory} is not reachable at {record.host}:{record.port} "
        f"({getattr(last, 'strerror', None) or last}); its access record is stale "
        f"({record.describe()}): start a new one with `hpcqueue server start`"
    )
