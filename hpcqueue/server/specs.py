"""Job specs from the network: `check_spec` turns what a peer sent (the CLI, the Python
API, the HTTP API, a peer of any kind) into a spec the state can take, or refuses it with
a :class:`RequestError` that names the field.
"""

from __future__ import annotations

import os

from hpcqueue import calls, deps
from hpcqueue.exceptions import RequestError, UsageError
from hpcqueue.jobs import MAX_CRASH_LIMIT, MAX_RETRIES
from hpcqueue.jobspec import MAX_STDIN
from hpcqueue.model import (
    ENV_NAME,
    IdRanges,
    MAX_COUNT,
    MAX_SECONDS,
    MAX_TASK_ID,
    MAX_TASKS_PER_JOB,
    RESOURCE_NAME,
    check_placeholders,
)
from hpcqueue.server.checks import (
    _is_int, brief, check_flag, check_int, check_seconds, check_str,
)
from hpcqueue.server.results import check_function


def _ranges(ids) -> tuple[list, int]:
    """Task id ranges as the state keeps them (sorted, disjoint), and their task count."""
    hint = "a list of [start, stop, step] ranges, e.g. [[1, 1000, 1]]"
    if not (isinstance(ids, list) and ids):
        raise RequestError(f"'ids' must be {hint}, not {brief(ids)}")
    out = []
    for r in ids:
        if not (isinstance(r, list) and len(r) == 3 and all(_is_int(x) for x in r)):
            raise RequestError(f"'ids' must be {hint}; {brief(r)} is not a range")
        start, stop, step = r
        if not (0 <= start <= stop <= MAX_TASK_ID and 1 <= step):
            raise RequestError(f"'ids': range {brief(r)} must have 0 <= start <= stop <= "
                               f"{MAX_TASK_ID} and a step of 1 or more")
        out.append([start, start + (stop - start) // step * step, step])
    out.sort()
    for (_, a1, _), (b0, _, _) in zip(out, out[1:]):
        if b0 <= a1:
            raise RequestError(f"'ids': ranges overlap near {b0}")
    total = sum((b - a) // s + 1 for a, b, s in out)
    if total > MAX_TASKS_PER_JOB:
        raise RequestError(f"a job holds at most {MAX_TASKS_PER_JOB:,} tasks, not {total:,}")
    return out, total


def _path_pattern(value, name: str) -> str | None:
    value = check_str(value, name)
    try:
        check_placeholders(value, repr(name))
    except UsageError as e:
        raise RequestError(str(e)) from None
    return value


def check_spec(spec) -> dict:
    """Validate a job spec from the network into the shape the state expects.

    Returns a new spec of known keys only, each checked against how the job
    (hpcqueue.jobs), the dispatch and the worker use it."""
    if not isinstance(spec, dict):
        raise RequestError(f"'spec' must be a map (a job spec), not {brief(spec)}")

    def get(key, default=None):
        value = spec.get(key)
        return default if value is None else value

    cmd = get("cmd")
    if cmd is not None and not (isinstance(cmd, list) and all(
            isinstance(a, str) and "\0" not in a for a in cmd)):
        raise RequestError("'cmd' must be a list of strings (without NUL characters)")
    shell = get("shell", False)
    if not isinstance(shell, bool):
        raise RequestError(f"'shell' must be true or false, not {brief(shell)}")
    is_open = check_flag(spec, "open")
    if is_open and spec.get("ids") == []:  # an open job may start with no task
        ids, total = [], 0
    else:
        ids, total = _ranges(spec.get("ids"))
    entries = get("entries")
    if entries is not None:
        _check_entries(entries)
        if len(entries) != total:
            raise RequestError(f"'entries' has {len(entries):,} items and 'ids' {total:,} "
                               "tasks: they must be as many")
    if is_open:
        if entries is None:
            raise RequestError("an open job ('open': true) needs 'entries' (maybe []): the "
                               "tasks added later are entries too")
        if ids and ids != [[0, total - 1, 1]]:
            raise RequestError(f"'ids' of an open job must be [[0, {total - 1}, 1]] (or [] "
                               "with no entries): the tasks added later take the next ids")
    kind = check_str(spec.get("kind"), "kind", nul_ok=True)
    function = None
    if kind == calls.KIND:
        function = check_function(spec, entries, is_open)
    elif not cmd and not shell:
        raise RequestError("a job needs a command: give it after --, or use --each-line")
    if not cmd and entries is None:
        raise RequestError("a job of shell lines ('shell' without 'cmd') needs 'entries'")
    res = get("res", {})
    if not (isinstance(res, dict) and all(
            isinstance(k, str) and RESOURCE_NAME.fullmatch(k) and k != "cpus"
            for k in res)):
        raise RequestError("'res' must map resource names (not cpus) to counts, "
                           f"not {brief(res)}")
    # a count of 0 asks for nothing: dropped, as a worker without that resource would
    # otherwise be handed a name it does not have
    res = {k: v for k, v in res.items() if check_int(v, f"res.{k}", 0, MAX_COUNT)}
    env = get("env", {})
    if not (isinstance(env, dict) and all(
            isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str)
            and "\0" not in v for k, v in env.items())):
        raise RequestError("'env' must map variable names (letters, digits, _) to strings "
                           "without NUL characters")
    cwd = _path_pattern(spec.get("cwd"), "cwd")
    stream = check_str(spec.get("stream"), "stream")
    if stream is not None:
        if not os.path.isabs(stream):
            raise RequestError(f"'stream' must be an absolute path (a directory), not "
                               f"{brief(stream)}")
        if spec.get("stdout") is not None or spec.get("stderr") is not None:
            raise RequestError("'stream' cannot be combined with 'stdout' or 'stderr': the "
                               "output of streamed tasks goes to the logs in its directory")
    if cwd and "%{CWD}" in cwd:
        raise RequestError("'cwd' cannot use %{CWD}: it defines it")
    checked = {
        "name": check_str(spec.get("name"), "name", nul_ok=True),
        "kind": kind,
        "cmd": cmd or None,
        "shell": shell,
        "ids": ids,
        "entries": entries,
        "cpus": check_int(get("cpus", 1), "cpus", 1, MAX_COUNT),
        "res": res,
        "priority": check_int(get("priority", 0), "priority", -MAX_COUNT, MAX_COUNT),
        "max_retries": check_int(get("max_retries", 0), "max_retries", 0, MAX_RETRIES),
        "crash_limit": check_int(get("crash_limit", 5), "crash_limit", 1, MAX_CRASH_LIMIT),
        "time_limit": check_seconds(spec.get("time_limit"), "time_limit"),
        "time_request": check_seconds(spec.get("time_request"), "time_request"),
        "retry_delay": _retry_delay(spec.get("retry_delay")),
        "retry_timeout": _positive_seconds(spec.get("retry_timeout"), "retry_timeout"),
        "stdout": _path_pattern(spec.get("stdout"), "stdout"),
        "stderr": _path_pattern(spec.get("stderr"), "stderr"),
        "cwd": cwd,
        "env": dict(env),
        "submit_dir": check_str(spec.get("submit_dir"), "submit_dir"),
        "unique": _unique_key(spec.get("unique")),
    }
    if is_open:  # only then: the specs of other jobs stay as they were
        checked["open"] = True
    if stream is not None:  # as "open"
        checked["stream"] = stream
    if function is not None:  # as "open"
        checked["function"] = function
    checked.update(_check_deps(spec, ids, is_open))  # as "open"
    checked.update(_task_extras(spec))
    return checked


def _check_deps(spec: dict, ids: list, is_open: bool) -> dict:
    """The dependency keys of a spec (``after``, ``after_any``, ``task_deps``: see
    :mod:`hpcqueue.deps`), only those given; ``after`` stays as sent (a selector or ids) until
    :func:`submit` resolves it against the jobs."""
    out: dict = {}
    try:
        after = deps.check_after(spec.get("after"))
        task_deps = spec.get("task_deps")
        if task_deps is not None and task_deps != []:
            if is_open:
                raise UsageError("an open job cannot have task dependencies: its tasks come "
                                 "later")
            out["task_deps"] = deps.check_task_deps(task_deps, IdRanges(ids))
    except UsageError as e:
        raise RequestError(str(e)) from None
    if after is not None:
        out["after"] = after
        if check_flag(spec, "after_any"):
            out["after_any"] = True
    elif check_flag(spec, "after_any"):
        raise RequestError("'after_any' needs 'after': the jobs to wait for")
    return out


#: what --task-dir may say in a spec: remove the folder always, or keep it if the task fails
TASK_DIR_MODES = ("remove", "keep-on-fail")


def _task_extras(spec: dict) -> dict:
    """The checked keys of --max-fails, --stdin and --task-dir, only those given (as
    "open")."""
    out: dict = {}
    if spec.get("max_fails") is not None:
        out["max_fails"] = check_int(spec["max_fails"], "max_fails", 1, MAX_TASKS_PER_JOB)
    stdin = spec.get("stdin")
    if stdin is not None:
        if not isinstance(stdin, bytes):
            raise RequestError(f"'stdin' must be bytes, not {brief(stdin)}")
        if len(stdin) > MAX_STDIN:
            raise RequestError(f"'stdin' holds {len(stdin):,} bytes; a job's stdin is at most "
                               f"{MAX_STDIN:,}: put it in a file the tasks read instead")
        out["stdin"] = stdin
    task_dir = spec.get("task_dir")
    if task_dir is not None:
        if task_dir not in TASK_DIR_MODES:
            raise RequestError(f"'task_dir' must be one of {', '.join(TASK_DIR_MODES)}, not "
                               f"{brief(task_dir)}")
        out["task_dir"] = task_dir
    return out


def _check_entries(entries) -> None:
    if not (isinstance(entries, list) and all(
            isinstance(e, str) and "\0" not in e for e in entries)):
        raise RequestError("'entries' must be a list of strings (without NUL characters)")


def _is_seconds(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 < value <= MAX_SECONDS)


def _positive_seconds(value, name: str) -> float | int | None:
    """None, or a number of seconds more than 0 and at most MAX_SECONDS."""
    if value is not None and not _is_seconds(value):
        raise RequestError(f"{name!r} must be a number of seconds more than 0 and at most "
                           f"{MAX_SECONDS:g}, not {brief(value)}")
    return value


def _retry_delay(value) -> list | None:
    """None, or [MIN, MAX] seconds with 0 < MIN <= MAX <= MAX_SECONDS."""
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_seconds, value))
            and value[0] <= value[1]):
        raise RequestError(f"'retry_delay' must be [MIN, MAX] seconds with 0 < MIN <= MAX <= "
                           f"{MAX_SECONDS:g}, not {brief(value)}")
    return list(value)


MAX_UNIQUE_KEY = 256  # characters of a --unique key


def _unique_key(value) -> str | None:
    value = check_str(value, "unique", nul_ok=True)
    if value is not None and not 0 < len(value) <= MAX_UNIQUE_KEY:
        raise RequestError(f"'unique' must be a key of 1 to {MAX_UNIQUE_KEY} characters")
    return value
