"""Checks of the values in a request.

Everything in a request comes from the network, so nothing in it is trusted: it is checked
before it becomes an event, since an event that `ServerState.apply` cannot take would stay
in the journal and stop every later restart.  Each check names the field and says what it
must be, and raises :class:`RequestError`.
"""

from __future__ import annotations

from hpcqueue.exceptions import RequestError
from hpcqueue.model import MAX_SECONDS


def brief(value) -> str:
    """A value for an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value, name: str, low: int, high: int) -> int:
    if not _is_int(value):
        raise RequestError(f"{name!r} must be a whole number, not {brief(value)}")
    if not low <= value <= high:
        raise RequestError(f"{name!r} must be from {low} to {high}, not {value}")
    return value


def check_seconds(value, name: str) -> float | int | None:
    """None, or a number of seconds from 0 to MAX_SECONDS."""
    if value is None:
        return None
    if not (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value <= MAX_SECONDS):
        raise RequestError(f"{name!r} must be a number of seconds from 0 to {MAX_SECONDS:g}, "
                           f"not {brief(value)}")
    return value


def check_str(value, name: str, nul_ok: bool = False) -> str | None:
    """None, or a string (without NUL where it reaches a path, an argv or the environment)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{name!r} must be a string, not {brief(value)}")
    if not nul_ok and "\0" in value:
        raise RequestError(f"{name!r} must not contain a NUL character")
    return value


def check_flag(req: dict, key: str) -> bool:
    value = req.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"{key!r} must be true or false, not {brief(value)}")
    return bool(value)
