"""Python functions as tasks, on the client's side: job specs of calls, and their results.

- :func:`function_spec` makes the spec of a job that calls ``fn(item)`` for each item,
  :func:`call_spec` of a job of one call ``fn(*args, **kwargs)``, :func:`calls_spec` of
  any calls; the options (``cpus``, ``time_limit``, ``max_retries``, ...) are those of
  `hpcqueue submit`, as keywords.
- :func:`decode_result` turns a row of a ``task_results`` reply into the call's value, or
  raises what the call raised (see :class:`~hpcqueue.exceptions.RemoteError`).
- :meth:`hpcqueue.Client.map`, :meth:`~hpcqueue.Client.submit_function` and
  :meth:`hpcqueue.client.Job.results` do the round trips with a server.

The wire form is in :mod:`hpcqueue.calls`.  A call runs on a worker in the worker's Python,
so the modules it uses must be importable there (cloudpickle carries the function itself,
and whatever it defines in ``__main__``, by value).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from hpcqueue import calls
from hpcqueue.exceptions import HpcqueueError, RemoteError, UsageError

#: keyword options of a function job -> what they are (for the message naming them)
OPTIONS = {
    "name": "job name", "cpus": "CPUs per call", "resources": "{name: count} per call",
    "priority": "high, normal, low or a number", "unique": "key",
    "max_retries": "retries of a failed call", "retry_delay": "seconds, or (min, max)",
    "retry_timeout": "seconds", "crash_limit": "lost workers before a call fails",
    "time_limit": "seconds", "time_request": "seconds", "stdout": "path pattern",
    "stderr": "path pattern", "stream": "directory", "cwd": "directory",
    "env": "{name: value}",
}


def _make_spec():
    """The spec builder that `hpcqueue submit` uses (the one place that names it)."""
    from hpcqueue.jobspec import make_spec

    return make_spec


def _pickle(obj, what: str) -> bytes:
    import cloudpickle

    try:
        return cloudpickle.dumps(obj)
    except Exception as e:  # pickling runs user code (__reduce__ ...)
        raise UsageError(f"cannot pickle {what} ({type(e).__name__}: {e}): a call's "
                         "function and arguments must be picklable by cloudpickle") from None


def _seconds(value, key: str):
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        from hpcqueue.model import parse_duration

        return parse_duration(value, key)
    raise UsageError(f"{key} must be a number of seconds or a duration such as '10m', not "
                     f"{value!r}")


def _options(options: dict) -> dict:
    """`submit`'s parsed options from the keywords of a function job."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} for a function job: use "
                         f"{', '.join(OPTIONS)}")
    opts = dict(options)
    for key in ("retry_timeout", "time_limit", "time_request"):
        opts[key] = _seconds(opts.get(key), key)
    delay = opts.get("retry_delay")
    if delay is not None:
        pair = delay if isinstance(delay, (tuple, list)) else (delay, delay)
        opts["retry_delay"] = tuple(_seconds(d, "retry_delay") for d in pair)
    priority = opts.get("priority")
    if isinstance(priority, str):
        from hpcqueue.model import parse_priority

        opts["priority"] = parse_priority(priority)
    for key, sep in (("resources", "="), ("env", "=")):
        value = opts.get(key)
        if isinstance(value, dict):
            opts[key] = [f"{k}{sep}{v}" for k, v in value.items()]
    return opts


def calls_spec(fn: Callable, arguments: Iterable[tuple[tuple, dict]], **options) -> dict:
    """The spec of a job with a task per ``(args, kwargs)`` of ARGUMENTS, each calling
    ``fn(*args, **kwargs)``; OPTIONS as `hpcqueue submit`'s (see ``OPTIONS``)."""
    if not callable(fn):
        raise UsageError(f"a function job calls a function, and {fn!r} is not callable")
    entries = [calls.encode(_pickle((tuple(args), dict(kwargs)), f"the arguments of call {k}"))
               for k, (args, kwargs) in enumerate(arguments)]
    opts = _options(options)
    opts.setdefault("name", getattr(fn, "__qualname__", None) or type(fn).__name__)
    # `submit`'s builder makes the shared fields; a job of calls has no command
    spec = _make_spec()(opts, ["python"], items=entries, source="the iterable",
                        submit_dir=os.getcwd())
    spec.update(kind=calls.KIND, cmd=None, function=calls.encode(_pickle(fn, repr(fn))))
    return spec


def function_spec(fn: Callable, iterable: Iterable, **options) -> dict:
    """The spec of a job that calls ``fn(item)`` for each item of ITERABLE, in order (task
    ids 0, 1, ...)."""
    return calls_spec(fn, (((item,), {}) for item in iterable), **options)


def call_spec(fn: Callable, *args, **kwargs) -> dict:
    """The spec of a job of one task that calls ``fn(*args, **kwargs)``, with the default
    options (:func:`calls_spec` takes options)."""
    return calls_spec(fn, [(args, kwargs)])


# ------------------------------------------------------------------ results


def decode_result(row: dict) -> Any:
    """The value of the call of one row of a ``task_results`` reply; or, if the call raised,
    that exception (with a :class:`RemoteError` carrying the remote traceback as its cause,
    and as its ``remote_traceback`` text), or the RemoteError itself when the exception does
    not unpickle here.  A row of a task that ended without an outcome (killed, timed out,
    its worker lost, canceled) raises RemoteError with the task's error."""
    job, task = row.get("job"), row.get("id")
    data = row.get("result")
    if data is None and row.get("path"):
        path = row["path"]
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HpcqueueError(f"the result of job {job} task {task} is in {path}, which "
                                f"cannot be read here ({e.strerror}): read it where that "
                                "file system is mounted") from None
    if data is None:
        state = row.get("state")
        if state in ("waiting", "running"):
            raise HpcqueueError(f"job {job} task {task} has not ended yet ({state}): wait "
                                "for its job first")
        if state == "canceled":
            raise RemoteError("hpcqueue.Canceled", "the task was canceled", task=task, job=job)
        raise RemoteError("hpcqueue.TaskFailed", row.get("error") or
                          f"it ended with exit code {row.get('exit_code')} and no result",
                          task=task, job=job)
    import cloudpickle
    import msgpack

    try:
        outcome = msgpack.unpackb(data, raw=False)
        ok = outcome["ok"]
    except Exception:  # anything msgpack raises on foreign bytes
        raise HpcqueueError(f"the result of job {job} task {task} is not an outcome of "
                            "hpcqueue.worker.callrun (damaged?)") from None
    if ok:
        try:
            return cloudpickle.loads(outcome["value"])
        except Exception as e:  # unpickling runs code of the value's classes
            raise HpcqueueError(f"the value of job {job} task {task} does not unpickle here "
                                f"({type(e).__name__}: {e}): are the modules it needs "
                                "importable in this Python?") from None
    error = RemoteError(outcome.get("type") or "Exception", outcome.get("message") or "",
                        outcome.get("traceback") or "", task=task, job=job)
    exc = None
    if outcome.get("exc"):
        try:
            exc = cloudpickle.loads(outcome["exc"])
        except Exception:  # an exception class not importable here
            exc = None
    if not isinstance(exc, BaseException):
        raise error
    try:
        exc.remote_traceback = error.traceback
    except AttributeError:  # (an exception class with __slots__)
        pass
    raise exc from error
