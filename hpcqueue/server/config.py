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
    fsync_interval: float = 1.0
    heartbeat: float = 8.0
    #: a worker silent for this many heartbeats is lost
    heartbeat_misses: int = 3
    handshake_timeout: float = 10.0
    write_access: bool = True
