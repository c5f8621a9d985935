"""Python calls as tasks: the wire form that the client, the server and the worker share.

A *function job* is a job spec of ``"kind": "function"`` whose ``function`` is the
cloudpickled callable (once per job) and whose ``entries`` are the pickled ``(args,
kwargs)`` of each call, one per task.  Both travel as base64 text, so that a function job
is a job like any other for everything that reads specs and entries as strings (the
journal, snapshots, listings, the HTTP API's JSON).

A worker runs a call with its own Python (:mod:`hpcqueue.worker.callrun`), which writes the
call's *outcome*: msgpack bytes of ``{"ok": true, "value": PICKLE}``, or of ``{"ok": false,
"type": NAME, "message": TEXT, "traceback": TEXT, "exc": PICKLE or None}``.  The outcome is
the task's *result*: bytes kept by the server, or, when bigger than the server's result
limit, a file in the task's folder (:func:`result_path`) whose path the server keeps.

Nothing here imports cloudpickle: the server never unpickles anything.
"""

from __future__ import annotations

import base64
import binascii
import os

KIND = "function"
#: bytes of a pickled callable, and of one call's pickled arguments, that a job may carry:
#: bigger data goes through files, not the server's memory and journal
MAX_FUNCTION_BYTES = 16 << 20
MAX_CALL_BYTES = 1 << 20
#: bytes of a result the server keeps in memory (and its journal); a bigger one is a file.
#: `server start --result-limit` sets it.
DEFAULT_RESULT_LIMIT = 256 << 10
RESULTS_DIR = "results"  # under the server dir: results of jobs that keep no output
RESULT_SUFFIX = ".result"


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of base64 TEXT; ValueError if it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64 ({e})") from None


def decoded_size(text: str) -> int:
    """The number of bytes base64 TEXT stands for (without decoding it)."""
    return len(text) * 3 // 4 - text[-2:].count("=")


def result_path(job_id: int, task_id: int, stdout: str | None, stream: str | None,
                server_dir: str | os.PathLike) -> str:
    """Where a result too big for the server goes: beside the task's stdout (STDOUT, the
    path it was filled in to, or None when it keeps none), in the job's folder of a
    streamed job (STREAM), or else in ``results/job-ID`` under the server dir."""
    name = f"{task_id}{RESULT_SUFFIX}"
    if stdout is not None:
        return os.path.join(os.path.dirname(stdout), name)
    if stream is not None:
        return os.path.join(stream, f"job-{job_id}", name)
    return os.path.join(server_dir, RESULTS_DIR, f"job-{job_id}", name)


def write_result(path: str, data: bytes) -> None:
    """Write DATA to PATH whole (a reader never sees half of it), making its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temp = f"{path}.{os.getpid()}.tmp"
    with open(temp, "wb") as f:
        f.write(data)
    os.replace(temp, path)


def failure_line(outcome: bytes, most: int = 300) -> str | None:
    """The one line a failed call's outcome gives as the task's error (``Type: message``),
    or None if OUTCOME is not a failure."""
    import msgpack

    try:
        d = msgpack.unpackb(outcome, raw=False)
    except Exception:  # anything msgpack raises: not an outcome
        return None
    if not isinstance(d, dict) or d.get("ok") is not False:
        return None
    message = str(d.get("message") or "").strip().splitlines()
    line = f"{d.get('type') or 'Exception'}: {message[0] if message else ''}".rstrip(": ")
    return line if len(line) <= most else line[:most - 3] + "..."
