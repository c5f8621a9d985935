"""Log lines for the long-running commands (server, worker): text or JSON, to stderr
and/or a file.

Verbosity: none is INFO; ``-v`` is DEBUG (connections, allocation polls, dispatch rounds);
``-vv`` is TRACE, which adds every protocol message.  ``--log-format json`` writes one JSON
object a line: ``time``, ``level``, ``logger``, ``message`` and, for a failure with a
traceback, ``exception``.

A record logged with ``extra={"console": False}`` goes to the log files only: the error
line that ``hpcqueue.cli.main`` prints on stderr is not said twice there.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from hpcqueue.exceptions import HpcqueueError

TRACE = logging.DEBUG - 5  # below DEBUG: every message in and out (lifecycle.TRACE too)
FORMATS = ("text", "json")
#: asyncio: its own errors (a task that failed unseen); py.warnings: Python's warnings, which
#: would otherwise be printed as lines of their own (not JSON)
LOGGERS = ("hpcqueue", "asyncio", "py.warnings")

_format = "text"


def level(verbosity: int) -> int:
    return logging.INFO if verbosity <= 0 else logging.DEBUG if verbosity == 1 else TRACE


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created).astimezone()
                            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


class _OnConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def _file_handler(path: Path) -> logging.Handler:
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as e:
        raise HpcqueueError(f"cannot write the log file {path}: {e.strerror}: give a "
                            "--log-file in a directory that exists and is writable") from None
    handler.setFormatter(formatter(_format))
    return handler


def setup(verbosity: int = 0, fmt: str = "text", console: bool = True,
          file: Path | None = None) -> None:
    """Send hpcqueue's log to stderr (unless `console` is false) and to `file`, if any."""
    global _format
    _format = fmt
    logging.addLevelName(TRACE, "TRACE")
    handlers: list[logging.Handler] = []
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter(fmt))
        stream.addFilter(_OnConsole())
        handlers.append(stream)
    if file is not None:
        handlers.append(_file_handler(file))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate = False
    logging.getLogger("hpcqueue").setLevel(level(verbosity))
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    logging.captureWarnings(True)


def add_file(path: Path):
    """Log into `path` too, in the format of the other handlers; returns what stops that."""
    handler = _file_handler(path)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return lambda: remove_handler(handler)


def remove_handler(handler: logging.Handler) -> None:
    for name in LOGGERS:
        logging.getLogger(name).removeHandler(handler)
    handler.close()


def failure(message: str, fmt: str) -> None:
    """Log why the command fails.  In text format the line goes to the log files only
    (`main` prints it on stderr); in JSON format to stderr too, as JSON, since `main`'s
    plain line would not parse."""
    logger = logging.getLogger("hpcqueue")
    if logger.handlers:
        logger.error("%s", message, extra={"console": fmt == "json"})
    elif fmt == "json":
        record = logging.LogRecord("hpcqueue", logging.ERROR, __file__, 0, message, None, None)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
