"""Server settings: plain values, read once, handed to the server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
