"""Job specs: from the options of `submit` (or of :meth:`hpcqueue.Client.submit`) to the
spec the server accepts.

:func:`make_spec` is pure (the HTTP API uses it too); :func:`build_spec` reads the tasks'
lines or JSON elements from files first; :func:`python_options` turns the keyword arguments
of the Python API into the options the command line parses.  Errors are UsageError, naming
the option.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from typing import Iterable, Mapping, Sequence, Union

from hpcqueue.exceptions import UsageError
from hpcqueue.jobs import MAX_CRASH_LIMIT, MAX_RETRIES
from hpcqueue.model import (
    MAX_COUNT,
    MAX_SECONDS,
    MAX_TASKS_PER_JOB,
    check_placeholders,
    parse_array,
    parse_duration,
    parse_env,
    parse_priority,
    parse_resources,
    parse_retry_delay,
)

DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"


def task_line(line: str, shell: bool) -> bool:
    """Whether a line of --each-line is a task: not blank, nor a comment of shell lines."""
    return bool(line.strip()) and not (shell and line.lstrip().startswith("#"))


def _read_bytes(path: str, option: str, most: int = -1) -> bytes:
    """The bytes of OPTION's file PATH (`-`: this process's stdin), MOST at most (-1: all);
    UsageError naming the option and the file when it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.buffer.read(most)
        with open(path, "rb") as f:
            return f.read(most)
    except FileNotFoundError:
        raise UsageError(f"{option}: no such file {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"{option}: {path!r} is a directory, not a file") from None
    except OSError as e:
        raise UsageError(f"{option}: cannot read {path!r}: {e.strerror}") from None


def read_lines(path: str) -> list[str]:
    """The non-blank lines of --each-line's file (`-`: stdin); UsageError naming the line
    that is not UTF-8 text or holds a NUL (a task's line cannot)."""
    data = _read_bytes(path, "--each-line")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UsageError(f"--each-line {path!r}: line {lineno} is not UTF-8 text (byte "
                         f"0x{data[e.start]:02x} at column {column}); convert the file, e.g. "
                         "with `iconv -f latin1 -t utf-8`") from None
    if "\0" in text:
        lineno = text.count("\n", 0, text.index("\0")) + 1
        raise UsageError(f"--each-line {path!r}: line {lineno} holds a NUL character, which "
                         "a task's line cannot")
    return [line for line in text.splitlines() if line.strip()]


def read_json(path: str) -> list[str]:
    try:
        with (sys.stdin if path == "-" else open(path, encoding="utf-8")) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--from-json: no such file {path!r}") from None
    except ValueError as e:
        raise UsageError(f"--from-json: {path!r} is not valid JSON: {e}") from None
    except OSError as e:
        raise UsageError(f"--from-json: cannot read {path!r}: {e.strerror}") from None
    if not isinstance(data, list):
        raise UsageError(f"--from-json: {path!r} must hold a JSON array, one element per task")
    return [json.dumps(x) for x in data]


def build_spec(opts: dict, command: tuple[str, ...], default_output: str | None = None,
               stream: bool = False) -> dict:
    """A job spec from the parsed options; raises UsageError for bad combinations.

    STREAM: `--each-line -` is read later, as it comes: an open job with no task yet."""
    _one_source([k for k in ("array", "each_line", "from_json") if opts.get(k)])
    lines = None
    if opts.get("each_line"):
        lines = [] if stream else read_lines(opts["each_line"])
    items = read_json(opts["from_json"]) if opts.get("from_json") else None
    source = opts.get("each_line") or opts.get("from_json")
    if opts.get("stdin"):
        if opts["stdin"] == "-" and "-" in (opts.get("each_line"), opts.get("from_json")):
            raise UsageError("--stdin - cannot be combined with --each-line - or "
                             "--from-json -: stdin gives one of them")
        opts = {**opts, "stdin_data": read_stdin_option(opts["stdin"])}
    return make_spec(opts, command, lines=lines, items=items,
                     source=repr(source) if source else "", submit_dir=os.getcwd(),
                     default_output=default_output, stream=stream)


def _one_source(given: list[str]) -> None:
    if len(given) > 1:
        names = " and ".join("--" + s.replace("_", "-") for s in given)
        raise UsageError(f"{names} cannot be combined: give one source of tasks")


def make_spec(opts: dict, command: Sequence[str], *, lines: list[str] | None = None,
              items: list[str] | None = None, source: str = "", submit_dir: str,
              default_output: str | None = None, stream: bool = False) -> dict:
    """The pure part of :func:`build_spec`, which the HTTP API uses too: a job spec from
    options whose tasks are already read.

    `lines` are --each-line's non-blank lines, `items` --from-json's elements (each as JSON
    text); `source` names where they came from, for messages.  Relative paths start at
    `submit_dir`.  No I/O; raises UsageError for bad combinations."""
    _one_source([k for k, given in (("array", bool(opts.get("array"))),
                                    ("each_line", lines is not None),
                                    ("from_json", items is not None)) if given])
    cmd = list(command)
    entries = None
    shell = False
    if opts.get("array"):
        ids = parse_array(opts["array"])
        ranges = [list(r) for r in ids.ranges]
        kind = "array"
    elif lines is not None or items is not None:
        if lines is not None:
            shell = not cmd
            entries = [e for e in lines if task_line(e, shell)]
            kind = "lines"
        else:
            entries = list(items)
            kind = "json"
        if not entries and not stream:
            raise UsageError(f"{source or 'the list of tasks'} holds no tasks: it is empty")
        if len(entries) > MAX_TASKS_PER_JOB:
            raise UsageError(f"too many tasks ({len(entries):,}); split the file")
        ranges = [[0, len(entries) - 1, 1]] if entries else []
        if opts.get("tasks"):
            ranges, entries = _some_tasks(opts["tasks"], entries, source, stream)
    else:
        ranges = [[0, 0, 1]]
        kind = "single"
    if opts.get("tasks") and entries is None:
        raise UsageError("--tasks picks tasks of --each-line or --from-json (by their ids: "
                         "0 for the first); with --array, give the ids to --array")
    if not cmd and not shell:
        raise UsageError("no command: give it after `--`, e.g. `hpcqueue submit -- ./sim.sh`")
    stream_dir = opts.get("stream")
    if stream_dir:
        given = [f"--{k}" for k in ("stdout", "stderr") if opts.get(k)]
        if given:
            raise UsageError(f"--stream cannot be combined with {' and '.join(given)}: with "
                             "--stream the output of every task goes to the logs in DIR")
        stream_dir = os.path.normpath(os.path.join(submit_dir, stream_dir))
        stdout = stderr = None
    else:
        stdout = opts.get("stdout") or default_output or DEFAULT_STDOUT
        stderr = opts.get("stderr") or default_output or DEFAULT_STDERR
    cwd = opts.get("cwd")
    for what, value in (("--stdout", stdout), ("--stderr", stderr), ("--cwd", cwd)):
        check_placeholders(value, what)
    if cwd and "%{CWD}" in cwd:
        raise UsageError("--cwd cannot use %{CWD}: it defines it")
    if cwd and not os.path.isabs(cwd) and not cwd.startswith("%{"):
        cwd = os.path.join(submit_dir, cwd)
    delay, timeout = opts.get("retry_delay"), opts.get("retry_timeout")
    for what, value in (("--retry-delay", delay), ("--retry-timeout", timeout)):
        if value is not None and not opts.get("max_retries"):
            raise UsageError(f"{what} needs --max-retries N (1 or more): without retries "
                             "there is nothing to delay or time out")
    if timeout is not None and not 0 < timeout <= MAX_SECONDS:
        raise UsageError(f"--retry-timeout must be more than 0 and at most {MAX_SECONDS:g} "
                         "seconds")
    spec = {
        "name": opts.get("name") or (os.path.basename(cmd[0]) if cmd else "each-line"),
        "kind": kind,
        "cmd": cmd or None,
        "shell": shell,
        "ids": ranges,
        "entries": entries,
        "cpus": opts.get("cpus") or 1,
        "res": parse_resources(opts.get("resources") or ()),
        "priority": opts.get("priority") or 0,
        "unique": opts.get("unique") or None,
        "max_retries": opts.get("max_retries") or 0,
        "retry_delay": list(delay) if delay else None,
        "retry_timeout": timeout,
        "crash_limit": opts.get("crash_limit") or 5,
        "time_limit": opts.get("time_limit"),
        "time_request": opts.get("time_request"),
        "stdout": stdout,
        "stderr": stderr,
        "cwd": cwd,
        "env": parse_env(opts.get("env") or ()),
        "submit_dir": submit_dir,
    }
    if stream_dir:
        spec["stream"] = stream_dir
    if stream:
        spec["open"] = True
    spec.update(dependency_fields(opts, items, ranges, stream))
    spec.update(task_extras(opts))
    return spec


def dependency_fields(opts: dict, items: list[str] | None, ranges: list,
                      stream: bool = False) -> dict:
    """The spec's dependency keys (see :mod:`hpcqueue.deps`), only those given: ``after``
    from --depends-on (the selector as given; the server resolves it), ``after_any``, and
    ``task_deps`` from the options' ``task_deps`` (the Python API's ``deps``) or the ``deps``
    of --from-json elements."""
    from hpcqueue import deps
    from hpcqueue.model import IdRanges

    out: dict = {}
    after = deps.check_after(opts.get("depends_on"))
    if opts.get("depends_on_ok") and opts.get("depends_on_any"):
        raise UsageError("--depends-on-ok and --depends-on-any cannot be combined: -ok waits "
                         "for every task of those jobs to succeed, -any runs however they "
                         "ended")
    if after is None:
        for flag in ("depends_on_ok", "depends_on_any"):
            if opts.get(flag):
                raise UsageError(f"--{flag.replace('_', '-')} needs --depends-on JOBS: the "
                                 "jobs to wait for")
    else:
        out["after"] = after
        if opts.get("depends_on_any"):
            out["after_any"] = True
    task_deps = opts.get("task_deps")
    from_items = deps.deps_of_items(items) if items is not None else None
    if task_deps and from_items:
        raise UsageError("give task dependencies once: as 'deps' in the JSON elements or as "
                         "the deps argument, not both")
    task_deps = task_deps or from_items
    if task_deps:
        if stream:
            raise UsageError("tasks read from stdin as they come cannot have dependencies")
        out["task_deps"] = deps.check_task_deps(task_deps, IdRanges(ranges))
    return out


def _some_tasks(text: str, entries: list[str], source: str, stream: bool):
    """(id ranges, their entries) of `--tasks RANGE`: the tasks keep the ids they have in
    the whole file (0 for its first task), so that failed ones run again under their ids."""
    if stream:
        raise UsageError("--tasks cannot be combined with --each-line - read as it comes: "
                         "save the lines to a file and give that")
    ids = parse_array(text, "--tasks")
    last = ids.ranges[-1][1]
    if last >= len(entries):
        raise UsageError(f"--tasks {text}: {source or 'the list of tasks'} holds "
                         f"{len(entries):,} tasks (ids 0-{len(entries) - 1}), not task {last}")
    return [list(r) for r in ids.ranges], [entries[i] for i in ids]


#: bytes of `--stdin` a job may hold: it is kept once per job, in its spec and its journal
MAX_STDIN = 16 << 20


def read_stdin_option(path: str) -> bytes:
    """The bytes of `--stdin FILE` (`-`: this process's stdin, read once)."""
    data = _read_bytes(path, "--stdin", MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise UsageError(f"--stdin {path!r} is over {MAX_STDIN >> 20} MiB: put it in a file "
                         "the tasks read (e.g. in a shared folder) instead")
    return data


def task_extras(opts: dict) -> dict:
    """The spec keys of --max-fails, --stdin, --task-dir and --keep-task-dir-on-fail, only
    those given (the specs of other jobs stay as they were)."""
    out: dict = {}
    if opts.get("max_fails"):
        out["max_fails"] = opts["max_fails"]
    if opts.get("stdin_data") is not None:
        out["stdin"] = opts["stdin_data"]
    if opts.get("keep_task_dir_on_fail") and not opts.get("task_dir"):
        raise UsageError("--keep-task-dir-on-fail needs --task-dir: it keeps the task's "
                         "folder when the task fails")
    if opts.get("task_dir"):
        out["task_dir"] = "keep-on-fail" if opts.get("keep_task_dir_on_fail") else "remove"
    return out


# ------------------------------------------------------------------ the Python API

Duration = Union[float, int, str, timedelta]


def python_options(*, name: str | None = None, array=None, cpus: int = 1,
                   resources: Mapping[str, int] | Iterable[str] | None = None,
                   priority: int | str = "normal", unique: str | None = None,
                   max_retries: int = 0, retry_delay=None,
                   retry_timeout: Duration | None = None, crash_limit: int = 5,
                   time_limit: Duration | None = None, time_request: Duration | None = None,
                   stdout: str | os.PathLike | None = None,
                   stderr: str | os.PathLike | None = None,
                   stream: str | os.PathLike | None = None,
                   cwd: str | os.PathLike | None = None,
                   env: Mapping[str, str] | Iterable[str] | None = None,
                   depends_on=None, depends_on_any: bool = False, deps=None,
                   max_fails: int | None = None, stdin: bytes | str | None = None,
                   task_dir: bool = False, keep_task_dir_on_fail: bool = False,
                   tasks=None) -> dict:
    """The options :func:`make_spec` reads, from the keyword arguments of
    :meth:`hpcqueue.Client.submit` (Python values: a ``range`` for an array, seconds or
    ``"1h"`` for a duration, dicts for resources and env).  Checks each as the command line
    does; raises UsageError naming the argument."""
    return {
        "name": _text(name, "name"),
        "array": _array(array),
        "cpus": _whole(cpus, "cpus", 1, MAX_COUNT),
        "resources": _pairs(resources, "resources"),
        "priority": _priority(priority),
        "unique": _text(unique, "unique"),
        "max_retries": _whole(max_retries, "max_retries", 0, MAX_RETRIES),
        "retry_delay": _retry_delay(retry_delay),
        "retry_timeout": _seconds(retry_timeout, "retry_timeout"),
        "crash_limit": _whole(crash_limit, "crash_limit", 1, MAX_CRASH_LIMIT),
        "time_limit": _seconds(time_limit, "time_limit"),
        "time_request": _seconds(time_request, "time_request"),
        "stdout": _path(stdout, "stdout"),
        "stderr": _path(stderr, "stderr"),
        "stream": _path(stream, "stream"),
        "cwd": _path(cwd, "cwd"),
        "env": _pairs(env, "env"),
        **_dependency_options(depends_on, depends_on_any, deps),
        "max_fails": None if max_fails is None
        else _whole(max_fails, "max_fails", 1, MAX_TASKS_PER_JOB),
        "stdin_data": _stdin_bytes(stdin),
        "task_dir": _flag(task_dir, "task_dir"),
        "keep_task_dir_on_fail": _flag(keep_task_dir_on_fail, "keep_task_dir_on_fail"),
        "tasks": _array(tasks),
    }


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be True or False, not {value!r}")
    return value


def _stdin_bytes(value) -> bytes | None:
    """STDIN for every task: bytes, or text (UTF-8); at most MAX_STDIN bytes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)):
        raise UsageError(f"stdin must be bytes or text, not {type(value).__name__}")
    if len(value) > MAX_STDIN:
        raise UsageError(f"stdin is over {MAX_STDIN >> 20} MiB: put it in a file the tasks "
                         "read instead")
    return bytes(value)


def _dependency_options(depends_on, depends_on_any, deps) -> dict:
    """--depends-on and --depends-on-any from DEPENDS_ON (a job id, a Job, a selector such as
    '1-3,last', or a list of ids and Jobs) and DEPENDS_ON_ANY, and the task dependencies
    DEPS ({task id: [task ids]}): see :mod:`hpcqueue.deps`."""
    from hpcqueue import deps as dependencies

    if depends_on is None or isinstance(depends_on, str):
        after = depends_on or None
    else:
        many = depends_on if isinstance(depends_on, (list, tuple, set, frozenset)) \
            else [depends_on]
        after = []
        for item in many:
            job_id = getattr(item, "id", item)  # a hpcqueue.client.Job, or an id
            if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id < 1:
                raise UsageError(f"depends_on must be job ids, Jobs or a selector such as "
                                 f"'1-3,last', not {depends_on!r:.60}")
            after.append(job_id)
    if not isinstance(depends_on_any, bool):
        raise UsageError(f"depends_on_any must be True or False, not {depends_on_any!r}")
    return {"depends_on": after, "depends_on_any": depends_on_any,
            "task_deps": dependencies.deps_of_mapping(deps)}


def _text(value, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{what} must be a string, not {value!r}")
    return value or None


def _path(value, what: str) -> str | None:
    if value is None:
        return None
    try:
        return os.fspath(value) or None
    except TypeError:
        raise UsageError(f"{what} must be a path (a string), not {value!r}") from None


def _whole(value, what: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{what} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _array(value) -> str | None:
    """Task ids as --array writes them: from text, an id, a range or some ids."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, range):
        if len(value) == 0 or value.step < 1:
            raise UsageError(f"array {value!r} holds no task id: give a range with ids in "
                             "increasing order, e.g. range(1, 1001)")
        return f"{value[0]}-{value[-1]}:{value.step}"
    try:
        ids = list(value)
    except TypeError:
        ids = None
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UsageError(f"array must be task ids: text such as '1-1000', an int, a range "
                         f"or a list of ints, not {value!r}")
    return ",".join(map(str, ids))


def _pairs(value, what: str) -> tuple[str, ...]:
    """NAME=VALUE items from a mapping or from such strings."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return tuple(f"{k}={v}" for k, v in value.items())
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{what} must be a dict or a list of NAME=VALUE strings, not "
                         f"{value!r}")
    return tuple(value)


def _priority(value) -> int:
    prio = parse_priority(value)
    if not -MAX_COUNT <= prio <= MAX_COUNT:
        raise UsageError(f"priority {prio} is out of range (at most {MAX_COUNT} either way)")
    return prio


def _seconds(value, what: str) -> float | None:
    """Seconds from a number, a timedelta or a duration such as '1h30m'."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, str):
        value = parse_duration(value, what)
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= MAX_SECONDS:
        raise UsageError(f"{what} must be seconds from 0 to {MAX_SECONDS:g}, a timedelta or "
                         f"a duration such as '1h30m', not {value!r}")
    return float(value)


def _retry_delay(value) -> tuple[float, float] | None:
    """(MIN, MAX) seconds from 'MIN[:MAX]', a duration, or a pair of them."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_retry_delay(value)
    low, high = (value if isinstance(value, (tuple, list)) and len(value) == 2
                 else (value, value))
    low, high = _seconds(low, "retry_delay"), _seconds(high, "retry_delay")
    if not 0 < low <= high:
        raise UsageError(f"retry_delay must be (MIN, MAX) with 0 < MIN <= MAX, not {value!r}")
    return low, high
