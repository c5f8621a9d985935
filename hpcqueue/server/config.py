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
