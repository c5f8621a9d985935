"""The server dir and its access record: where a server is and the key to it.

Each start of a server gets an *instance dir* of its own in the server dir,
``<server dir>/<YYYYmmdd-HHMMSS.mmm>-<server id>/``, holding its access record
``access.json`` (host, port, server id, pid and the secret key) and its
``server.log``.  The symlink ``<server dir>/current`` names the live (or the
last) instance; it is replaced atomically when a new server is ready, and
everything that reads the access record follows it.  Old instance dirs stay, so
their logs can still be read.  ``<server dir>/access.json`` is a symlink to
``current/access.json``, for tools that read that path; a plain file there is
the record of a server started by hpcqueue 0.1, which is still read when there
is no ``current`` record.

The dirs are 0700 and the record 0600, so only the user who started the server
can read the key.  Several servers per user work through different server dirs.
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
CURRENT = "current"  # the symlink to the live instance dir
SERVER_LOG = "server.log"


def server_dir(path: str | os.PathLike | None = None) -> Path:
    """The server dir: the argument (`--server-dir`), else $HPCQUEUE_SERVER_DIR, else
    ``settings.server-dir`` of the config files, else the default."""
    raw = path or os.environ.get(ENV_SERVER_DIR)
    if not raw:
        from hpcqueue.config import server_dir_setting

        setting = server_dir_setting()
        raw = setting.value if setting is not None else DEFAULT_SERVER_DIR
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


def instance_name(server_id: str, started: float) -> str:
    """The name of an instance dir: sorts by start time (to the millisecond: two starts in
    one second still sort in order), unique by server id."""
    ms = int(started * 1000) % 1000
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.{ms:03d}-{server_id}"


def new_instance_dir(directory: Path, name: str) -> Path:
    """Create the server dir (if needed) and the instance dir `name` in it, both 0700."""
    ensure_private_dir(directory)
    return ensure_private_dir(directory / name)


def write_access(instance_dir: Path, record: AccessRecord) -> Path:
    path = instance_dir / ACCESS_FILE
    write_private_file(path, json.dumps(asdict(record), indent=2).encode())
    return path


def _replace_symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: a reader sees the old link or the new one


def publish(directory: Path, instance_dir: Path) -> None:
    """Point `current` at `instance_dir` (atomically), and `access.json` at
    `current/access.json`: from now on clients and workers find this server."""
    try:
        _replace_symlink(instance_dir.name, directory / CURRENT)
        legacy, want = directory / ACCESS_FILE, f"{CURRENT}/{ACCESS_FILE}"
        if not (legacy.is_symlink() and os.readlink(legacy) == want):
            # no link yet, or the record of an hpcqueue 0.1 server that is not running (the
            # caller checked): replace it, so that nothing reads a stale record there
            _replace_symlink(want, legacy)
    except OSError as e:
        raise HpcqueueError(f"cannot write {directory / CURRENT}: {e.strerror or e}: is the "
                            "server dir on a file system without symlinks? give another "
                            "--server-dir") from None


def access_path(directory: Path) -> Path:
    """The access record clients read: the live instance's, else (a server started by
    hpcqueue 0.1) the plain ``access.json`` of the server dir."""
    current = directory / CURRENT / ACCESS_FILE
    if current.exists():
        return current
    return directory / ACCESS_FILE


def current_instance(directory: Path) -> Path | None:
    """The instance dir `current` names (it may have stopped), or None."""
    link = directory / CURRENT
    return link.resolve() if link.is_dir() else None


def read_access(directory: Path) -> AccessRecord:
    path = access_path(directory)
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


def remove_access(instance_dir: Path, server_id: str) -> None:
    """Remove the instance's access record if it is still ours (the instance dir stays)."""
    path = instance_dir / ACCESS_FILE
    try:
        if json.loads(path.read_text()).get("server_id") == server_id:
            path.unlink()
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------- pid files


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, ended but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _looks_like_hpcqueue(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"hpcqueue" in f.read()
    except OSError:
        return True  # no /proc to ask: take the live pid at its word


def read_pid_file(path: Path) -> int | None:
    """The pid in `path`, or None if there is no such file."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise HpcqueueError(f"cannot read the pid file {path}: {e.strerror}") from None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return 0  # not a pid: stale


def live_server_in_pid_file(path: Path) -> int | None:
    """The pid of a live hpcqueue process named by `path`, or None (no file, or stale)."""
    pid = read_pid_file(path)
    if pid and pid != os.getpid() and pid_alive(pid) and _looks_like_hpcqueue(pid):
        return pid
    return None


def claim_pid_file(path: Path) -> None:
    """Write our pid into `path` (0644): a stale file is replaced, one naming a live server
    refused."""
    pid = live_server_in_pid_file(path)
    if pid is not None:
        raise HpcqueueError(f"the pid file {path} names a running server (pid {pid}): stop it "
                            "with `hpcqueue server stop` (or `kill " + str(pid) + "`), or "
                            "give another --pid-file")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{os.getpid()}\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise HpcqueueError(f"cannot write the pid file {path}: {e.strerror}: give a "
                            "--pid-file in a writable directory") from None


def remove_pid_file(path: Path) -> None:
    """Remove `path` if it still names this process."""
    try:
        if read_pid_file(path) == os.getpid():
            path.unlink()
    except (OSError, HpcqueueError):
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
