"""SSH tunnels for workers: reach the server through an SSH host (`worker start --tunnel`).

A worker on a network that cannot reach the server, but can reach an SSH host that can,
opens its connection to the server as a ``direct-tcpip`` channel through that host (what
``ssh -L`` does).  paramiko blocks, so it stays off the event loop: the SSH connection and
each channel are opened in a thread, and a relay thread copies bytes between the channel
and one end of a socket pair, whose other end the event loop uses like any connection.  No
port is opened on this host.

The SSH connection is made as fabric makes it, from ~/.ssh/config (user, port, identity
file, proxy) and the agent.  Host keys are checked against ~/.ssh/known_hosts and the
config's UserKnownHostsFile: an unknown or changed key is refused.  When the connection has
dropped, the next connection to the server opens it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
from dataclasses import dataclass

from hpcqueue.exceptions import HpcqueueError, NoServerError, UsageError

log = logging.getLogger("hpcqueue.worker")
CONNECT_TIMEOUT = 15.0  # seconds for the SSH banner (and 5 more for TCP and negotiation)
AUTH_TIMEOUT = 30.0
CHANNEL_TIMEOUT = 30.0  # seconds the SSH host may take to reach the server
KEEPALIVE = 15  # seconds between SSH keepalives, so that a dead path is noticed
POLL = 1.0  # seconds a relay waits before it looks whether its channel is still open
CHUNK = 1 << 16
INSTALL_HINT = "pip install 'hpcqueue[ssh]'"


@dataclass(frozen=True)
class TunnelSpec:
    """Where the tunnel goes: [USER@]HOST[:PORT]; what is not given comes from ~/.ssh/config."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        """The spec as `ssh` takes it (an ssh:// URI when it has a port)."""
        user = f"{self.user}@" if self.user else ""
        if self.port is None:
            return f"{user}{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{user}{host}:{self.port}"


def parse_tunnel(text: str) -> TunnelSpec:
    """`[USER@]HOST[:PORT]` (HOST may be `[IPv6]`) as a TunnelSpec, or a UsageError."""

    def bad(why: str) -> UsageError:
        return UsageError(f"{text!r} is not [USER@]HOST[:PORT]: {why}")

    user, at, rest = text.rpartition("@")
    if at and not user:
        raise bad("no user before '@'")
    if rest.startswith("["):
        host, closed, after = rest[1:].partition("]")
        if not closed or (after and not after.startswith(":")):
            raise bad("an IPv6 address goes in brackets, as [ADDR] or [ADDR]:PORT")
        port = after[1:] if after else None
    else:
        host, colon, port = rest.partition(":")
        port = port if colon else None
        if port is not None and ":" in port:
            raise bad("an IPv6 address goes in brackets, as [ADDR]:PORT")
    if not host:
        raise bad("no host")
    if host.startswith("-"):
        raise bad("a host does not start with '-'")
    if any(c.isspace() or c in "/@" for c in host + user):
        raise bad("a space, '/' or '@' in the host or the user")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise bad(f"the port {port!r} is not a number from 1 to 65535")
    return TunnelSpec(host=host, user=user or None, port=int(port) if port else None)


def require_ssh() -> None:
    """A clear error when the optional SSH libraries are missing."""
    try:
        import fabric  # noqa: F401
        import paramiko  # noqa: F401
    except ImportError:
        raise UsageError(f"--tunnel needs fabric and paramiko: {INSTALL_HINT}") from None


class Tunnel:
    """One SSH connection to a host, opened again when it drops, and channels through it."""

    def __init__(self, spec: TunnelSpec):
        require_ssh()
        # paramiko logs a failed channel as an error of its own: the worker says it once
        logging.getLogger("paramiko").addHandler(logging.NullHandler())
        self.spec = spec
        self._conn = None
        self._lock = threading.Lock()  # one thread (re)opens the SSH connection at a time

    async def open_connection(self, host: str, port: int, limit: int):
        """(reader, writer) for a connection to host:port as the SSH host sees it.

        Raises OSError when the SSH host cannot reach host:port or the SSH connection drops
        meanwhile (as a direct connection would), NoServerError when the SSH host cannot be
        reached, and HpcqueueError for what retrying does not fix (host key, authentication).
        """
        channel = await asyncio.to_thread(self._channel, host, port)
        ours, theirs = socket.socketpair()
        threading.Thread(target=_relay, args=(channel, theirs), daemon=True,
                         name=f"tunnel {host}:{port}").start()
        return await asyncio.open_connection(sock=ours, limit=limit)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------- in threads

    def _channel(self, host: str, port: int):
        import paramiko

        with self._lock:
            transport = self._transport()
            try:
                return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                              timeout=CHANNEL_TIMEOUT)
            except paramiko.ChannelException as e:
                if e.code == 1:  # SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                    raise HpcqueueError(
                        f"{self.spec} refuses to forward connections ({e.text}): its sshd "
                        "needs AllowTcpForwarding yes, or tunnel through another host") from None
                raise OSError(f"{e.text}, through the SSH tunnel via {self.spec}") from None
            except (paramiko.SSHException, EOFError, OSError) as e:
                self.close()
                why = str(e) or type(e).__name__
                raise OSError(f"the SSH connection to {self.spec} dropped ({why})") from None

    def _transport(self):
        import fabric
        import paramiko

        if self._conn is not None and self._conn.is_connected:
            return self._conn.transport
        if self._conn is not None:
            log.warning("the SSH connection to %s dropped: opening it again", self.spec)
            self.close()
        spec = self.spec
        # paramiko's negotiation gives up after the connect timeout without saying why:
        # let the banner's own timeout come first, with its reason
        conn = fabric.Connection(spec.host, user=spec.user, port=spec.port,
                                 connect_timeout=CONNECT_TIMEOUT + 5,
                                 connect_kwargs={"banner_timeout": CONNECT_TIMEOUT,
                                                 "auth_timeout": AUTH_TIMEOUT})
        # fabric accepts any host key by default and never reads known_hosts: check them
        conn.client.load_system_host_keys()
        for name in str(conn.ssh_config.get("userknownhostsfile", "")).split():
            path = os.path.expanduser(name)
            if os.path.isfile(path):
                conn.client.get_host_keys().load(path)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.open()
        except (paramiko.SSHException, OSError, EOFError) as e:
            conn.close()
            raise _open_error(spec, e) from None
        conn.transport.set_keepalive(KEEPALIVE)
        try:
            conn.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):  # a ProxyCommand's pipe, not a TCP socket
            pass
        self._conn = conn
        log.info("SSH tunnel open: %s@%s:%s", conn.user, conn.host, conn.port)
        return conn.transport


def _open_error(spec: TunnelSpec, e: BaseException) -> HpcqueueError:
    """What retrying cannot fix (host key, authentication, a missing key file) as it is;
    the rest (refused, unreachable, timed out) as NoServerError, which a worker that
    reconnects retries."""
    import paramiko

    from hpcqueue.autoalloc.transports.ssh import ssh_error

    if isinstance(e, EOFError):
        e = paramiko.SSHException("the SSH host closed the connection")
    elif "protocol banner" in str(e):  # paramiko glues the cause on: "banner[Errno 104] ..."
        cause = str(e).partition("banner")[2].strip()
        cause = cause.split("] ", 1)[-1] if cause.startswith("[Errno") else cause
        e = OSError(f"no SSH greeting from the host ({cause or 'timed out'})")
    elif type(e) is paramiko.SSHException and "authentication" in str(e).lower():
        e = paramiko.AuthenticationException(str(e))  # "No authentication methods available"
    error = ssh_error(str(spec), e)
    if isinstance(e, (paramiko.BadHostKeyException, paramiko.AuthenticationException,
                      FileNotFoundError)) or "known_hosts" in str(e):
        return error
    return NoServerError(f"{error}: check --tunnel {spec}")


def _relay(channel, sock: socket.socket) -> None:
    """Copy bytes both ways between an SSH channel and a socket until either ends."""
    try:
        while not channel.closed:
            readable, _, _ = select.select([sock, channel], [], [], POLL)
            if sock in readable:
                data = sock.recv(CHUNK)
                if not data:
                    break
                channel.sendall(data)
            if channel in readable:
                data = channel.recv(CHUNK)
                if not data:
                    break
                sock.sendall(data)
    except Exception as e:  # the channel or the socket broke: the worker sees the end
        log.debug("tunnel relay ended: %s", e)
    finally:
        channel.close()
        sock.close()
