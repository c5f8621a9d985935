"""Timestamps as JSON output gives them: ISO 8601 in local time, with the zone's offset.

``iso(1795571302.7665155)`` is ``"2026-11-25T01:48:22.766515+00:00"`` on a UTC machine.
The date, time and offset of each whole second are worked out once and kept (a listing of a
million tasks meets a few thousand distinct seconds), so that formatting a row costs a dict
lookup and an integer format, not a `datetime`.
"""

from __future__ import annotations

from datetime import datetime

_SECONDS: dict[int, tuple[str, str]] = {}  # whole second: (date and time, offset)
_KEEP = 65_536  # seconds remembered before the cache starts again


def _second(s: int) -> tuple[str, str]:
    if len(_SECONDS) >= _KEEP:
        _SECONDS.clear()
    local = datetime.fromtimestamp(s).astimezone()
    stamp = local.isoformat(timespec="seconds")  # 2026-11-25T01:48:22+00:00
    pair = _SECONDS[s] = (stamp[:19], stamp[19:])
    return pair


def iso(t: float | None) -> str | None:
    """T (seconds since the epoch) as ISO 8601 with microseconds and the zone; None stays None."""
    if t is None:
        return None
    s, us = divmod(round(t * 1_000_000), 1_000_000)
    pair = _SECONDS.get(s) or _second(s)
    return f"{pair[0]}.{us:06d}{pair[1]}"
