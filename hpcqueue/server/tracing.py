"""Connection logging: one line for a worker's hello, and every protocol message at TRACE
(`-vv`), each field cut short and secrets (keys, tokens) masked."""

from __future__ import annotations

import logging

from hpcqueue.server.checks import brief

log = logging.getLogger("hpcqueue.server")
TRACE = logging.DEBUG - 5  # the level of -vv: every message (hpcqueue.cli.logs.TRACE)


def hello_summary(info) -> str:
    if not isinstance(info, dict):
        return "no info"
    return ", ".join(f"{k} {info[k]}" for k in ("hostname", "pid", "cpus", "version",
                                                 "batch_job", "alloc") if info.get(k))


def _short(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return f"{{{len(value)} keys}}"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return brief(value)


def message_summary(message) -> str:
    """One line for a protocol message: its op and its fields, each cut short; secrets out."""
    if not isinstance(message, dict):
        return _short(message)
    parts = [str(message["op"])] if "op" in message else []
    for k, v in message.items():
        if k != "op":
            secret = "key" in str(k) or "token" in str(k)
            parts.append(f"{k}={'***' if secret else _short(v)}")
    return " ".join(parts)


class TracedSession:
    """A protocol session that logs every message it opens or seals, at TRACE (-vv)."""

    __slots__ = ("session", "addr")

    def __init__(self, session, addr):
        self.session, self.addr = session, addr

    def seal(self, message) -> bytes:
        log.log(TRACE, "to %s: %s", self.addr, message_summary(message))
        return self.session.seal(message)

    def open(self, box: bytes):
        message = self.session.open(box)
        log.log(TRACE, "from %s: %s", self.addr, message_summary(message))
        return message
