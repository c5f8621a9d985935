"""Function jobs on the server: checking their spec, taking their results from workers, and
pages of results for clients.

See :mod:`hpcqueue.calls` for the wire form.  A result the state keeps is ``bytes`` (the
outcome itself) or ``str`` (the path of a file holding it).  A worker writes a result over
the server's limit to a file itself; one that still arrives inline and too big (a worker
told another limit) is written to a file here, under the server dir, so that the server's
memory stays bounded by the limit per result.
"""

from __future__ import annotations

import logging
import os

from hpcqueue import calls
from hpcqueue.exceptions import ProtocolError, RequestError
from hpcqueue.jobs import Job
from hpcqueue.model import FAILED, FINISHED, STATE_CODES

log = logging.getLogger("hpcqueue.server")

PAGE_RESULTS = 1000  # results a `task_results` page holds at most ...
PAGE_RESULT_BYTES = 16 << 20  # ... and bytes of inline results (one more may pass it)
MAX_PATH = 4096


def check_function(spec: dict, entries, is_open: bool) -> str:
    """The `function` of a function job's spec, checked with its entries and other fields;
    raises RequestError naming what is wrong."""
    fn = spec.get("function")
    if not isinstance(fn, str) or not fn:
        raise RequestError("a function job ('kind': 'function') needs 'function': its "
                           "callable, cloudpickled and base64-encoded")
    if spec.get("cmd") is not None or spec.get("shell"):
        raise RequestError("a function job ('kind': 'function') runs its callable: it takes "
                           "no 'cmd' and no 'shell'")
    if is_open:
        raise RequestError("a function job cannot be open ('open': true): submit all its "
                           "calls at once")
    if entries is None:
        raise RequestError("a function job needs 'entries': one pickled (args, kwargs) per "
                           "task, base64-encoded")
    _check_payload(fn, "'function'", calls.MAX_FUNCTION_BYTES)
    for k, entry in enumerate(entries):
        _check_payload(entry, f"'entries'[{k}]", calls.MAX_CALL_BYTES)
    return fn


def _check_payload(text: str, what: str, most: int) -> None:
    if calls.decoded_size(text) > most:
        raise RequestError(f"{what} holds {calls.decoded_size(text):,} bytes, more than the "
                           f"{most:,} a job may carry: pass big data through files")
    try:
        calls.decode(text)
    except ValueError as e:
        raise RequestError(f"{what} must be base64 text: {e}") from None


def check_outputs(jobs: dict, rows, limit: int, server_dir: str | None,
                  forgotten=lambda job_id: False) -> list:
    """The results of a worker's ``done`` message (``o``: [[job, index, instance, result],
    ...], result bytes or a file's path), checked; an inline result over LIMIT is written to
    a file under SERVER_DIR and replaced by its path.  Rows of jobs for which FORGOTTEN(id)
    is true are dropped."""
    if type(rows) is not list:
        raise ProtocolError("results ('o') must be a list")
    rows = [row for row in rows if not (type(row) is list and row and forgotten(row[0]))]
    for row in rows:
        if type(row) is not list or len(row) != 4:
            raise ProtocolError("a result ('o') must have 4 fields")
        job_id, i, inst, result = row
        job = jobs.get(job_id) if type(job_id) is int else None
        if (job is None or type(i) is not int or not 0 <= i < job.n or type(inst) is not int
                or not (type(result) is bytes or (type(result) is str and 0 < len(result)
                                                  <= MAX_PATH and "\0" not in result
                                                  and os.path.isabs(result)))):
            raise ProtocolError(f"malformed result {row!r:.200}")
        if type(result) is bytes and len(result) > limit:
            row[3] = _spill(job, i, result, server_dir)
    return rows


def _spill(job: Job, i: int, data: bytes, server_dir: str | None):
    """Write an inline result too big to keep to a file; its path, or (without a server dir
    to write to, or when the write fails) a failure outcome that says so."""
    task_id = job.ids.id_at(i)
    if server_dir is not None:
        path = calls.result_path(job.id, task_id, None, None, server_dir)
        try:
            calls.write_result(path, data)
            return path
        except OSError as e:
            why = f"cannot write it to {path}: {e.strerror}"
    else:
        why = "this server has no server dir to write it to"
    log.error("job %d task %d: a result of %d bytes is over the limit and %s", job.id,
              task_id, len(data), why)
    import msgpack

    return msgpack.packb({"ok": False, "type": "hpcqueue.ResultLost", "traceback": "",
                          "message": f"the result ({len(data):,} bytes) was over the "
                                     f"server's result limit and {why}", "exc": None})


def results_page(job: Job, spans, after: int, limit: int,
                 budget: int = PAGE_RESULT_BYTES) -> dict:
    """A page of JOB's results: the tasks of the index SPANS (inclusive (lo, hi), in order;
    None: all) from index AFTER on, LIMIT at most, and about BUDGET bytes of inline results.
    A row is ``{"id", "state", "exit_code", "error"}`` with ``result`` (bytes) or ``path``
    (a file holding them) once the task has one; ``next`` is the index to ask for next."""
    if spans is None:
        spans = [(0, job.n - 1)] if job.n else []
    rows: list[dict] = []
    size = 0
    results, errors = job.results, job.errors
    for lo, hi in spans:
        for i in range(max(lo, after), hi + 1):
            if len(rows) >= limit or size >= budget:
                return {"job": job.id, "results": rows, "next": i}
            code = job.task_state(i)
            row = {"id": job.ids.id_at(i), "state": STATE_CODES[code].value,
                   "exit_code": job.exit[i] if code in (FINISHED, FAILED) else None,
                   "error": errors.get(i)}
            result = results.get(i)
            if type(result) is bytes:
                row["result"] = result
                size += len(result)
            elif result is not None:
                row["path"] = result
            rows.append(row)
    return {"job": job.id, "results": rows, "next": None}
