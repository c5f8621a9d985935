"""From `submit` (and `run`) options to a job spec the server accepts."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import click

from hpcqueue.cli.common import DURATION
from hpcqueue.exceptions import UsageError
from hpcqueue.model import (
    MAX_COUNT,
    MAX_SECONDS,
    MAX_TASKS_PER_JOB,
    check_placeholders,
    parse_array,
    parse_env,
    parse_priority,
    parse_resources,
    parse_retry_delay,
)

DEFAULT_STDOUT = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout"
DEFAULT_STDERR = "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stderr"


class Priority(click.ParamType):
    name = "PRIORITY"

    def convert(self, value, param, ctx):
        try:
            prio = parse_priority(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)
        if not -MAX_COUNT <= prio <= MAX_COUNT:
            self.fail(f"priority {prio} is out of range (at most {MAX_COUNT} either way)",
                      param, ctx)
        return prio


PRIORITY = Priority()


class RetryDelay(click.ParamType):
    name = "MIN[:MAX]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_retry_delay(value)
        except UsageError as e:
            self.fail(str(e), param, ctx)


RETRY_DELAY = RetryDelay()


def task_options(fn):
    """The options that describe tasks, shared by `submit` and `run`."""
    options = [
        click.option("--name", help="Job name."),
        click.option("--array", "array", metavar="SPEC",
                     help="Task ids, e.g. 1-1000, 0-99:2 or 1,5,10-20 ($HPCQUEUE_TASK_ID)."),
        click.option("--each-line", "each_line", metavar="FILE",
                     help="One task per line of FILE ($HPCQUEUE_ENTRY); `-` reads stdin. "
                          "With no CMD each line is a shell command."),
        click.option("--from-json", "from_json", metavar="FILE",
                     help="One task per element of a JSON array ($HPCQUEUE_ENTRY is the "
                          "element as JSON)."),
        click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True,
                     help="CPUs each task needs."),
        click.option("--resource", "resources", multiple=True, metavar="NAME=N",
                     help="Another resource each task needs, e.g. gpus=1 (repeatable)."),
        click.option("--priority", type=PRIORITY, default="normal", show_default=True,
                     help="high, normal, low or a whole number; higher runs first."),
        click.option("--unique", metavar="KEY",
                     help="While a job submitted with KEY is unfinished, submitting KEY again "
                          "returns that job instead of making a new one."),
        click.option("--max-retries", type=click.IntRange(min=0, max=255), default=0,
                     show_default=True, help="Run a failed task again up to N times."),
        click.option("--retry-delay", type=RETRY_DELAY,
                     help="Wait before each retry: MIN before the first, doubling up to MAX, "
                          "e.g. 1s:4s (MAX defaults to MIN)."),
        click.option("--retry-timeout", type=DURATION,
                     help="Do not retry a task that fails again after this long since its "
                          "first failure."),
        click.option("--crash-limit", type=click.IntRange(min=1, max=255), default=5,
                     show_default=True,
                     help="Fail a task after its worker was lost this many times."),
        click.option("--time-limit", type=DURATION, help="Kill a task that runs longer."),
        click.option("--time-request", type=DURATION,
                     help="Start a task only on a worker with at least this much time left."),
        click.option("--stdout", metavar="PATH",
                     help=f"Where each task's stdout goes (default {DEFAULT_STDOUT}; "
                          "`none` discards it)."),
        click.option("--stderr", metavar="PATH", help="Where each task's stderr goes."),
        click.option("--stream", metavar="DIR",
                     help="Write the stdout and stderr of all tasks into a few log files in "
                          "DIR/job-ID (one per worker), not a file per task: the choice for "
                          "big arrays. Read them with `hpcqueue job cat`."),
        click.option("--cwd", metavar="DIR", help="Working directory of each task."),
        click.option("--env", "env", multiple=True, metavar="K=V",
                     help="Set an environment variable for each task (repeatable)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


#: `submit --each-line -` from a pipe sends its lines in bundles: every N lines, or DUR after
#: the first line not yet sent, whichever comes first (hypershell's -b and -w)
DEFAULT_BUNDLE_SIZE = 100  # lines: a request per 100 tasks keeps a fast producer cheap
DEFAULT_BUNDLE_WAIT = 1.0  # seconds: a slow producer's line runs about a second after it


def stream_options(fn):
    """`submit`'s options for reading tasks from stdin as they come."""
    options = [
        click.option("-b", "--bundle-size", type=click.IntRange(min=1), metavar="N",
                     help=f"With --each-line -: send the lines in bundles of N (default "
                          f"{DEFAULT_BUNDLE_SIZE}) ..."),
        click.option("-w", "--bundle-wait", type=DURATION, metavar="DUR",
                     help=f"... or DUR after the first unsent line, whichever comes first "
                          f"(default {DEFAULT_BUNDLE_WAIT:g}s)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@dataclass(frozen=True)
class Bundling:
    """How `submit` sends the lines of stdin: `size` lines, or after `wait` seconds."""

    size: int = DEFAULT_BUNDLE_SIZE
    wait: float = DEFAULT_BUNDLE_WAIT


def bundling(opts: dict, stdin_is_file: bool) -> Bundling | None:
    """Whether `submit` streams stdin (and how), or submits all its tasks at once (None).

    `--each-line -` streams when stdin is not a regular file (a pipe, a terminal), or when
    --bundle-size or --bundle-wait is given; a file is read whole, as before."""
    given = [name for name, key in (("--bundle-size", "bundle_size"),
                                    ("--bundle-wait", "bundle_wait"))
             if opts.get(key) is not None]
    if opts.get("each_line") != "-":
        if given:
            raise UsageError(f"{given[0]} needs --each-line -: it bundles the lines read "
                             "from stdin")
        return None
    if not given and stdin_is_file:
        return None
    size, wait = opts.get("bundle_size"), opts.get("bundle_wait")
    return Bundling(DEFAULT_BUNDLE_SIZE if size is None else size,
                    DEFAULT_BUNDLE_WAIT if wait is None else wait)


def task_line(line: str, shell: bool) -> bool:
    """Whether a line of --each-line is a task: not blank, nor a comment of shell lines."""
    return bool(line.strip()) and not (shell and line.lstrip().startswith("#"))


def _read_lines(path: str) -> list[str]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
    except FileNotFoundError:
        raise UsageError(f"--each-line: no such file {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"--each-line: {path!r} is a directory, not a file") from None
    except OSError as e:
        raise UsageError(f"--each-line: cannot read {path!r}: {e.strerror}") from None
    return [line for line in text.splitlines() if line.strip()]


def _read_json(path: str) -> list[str]:
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
        lines = [] if stream else _read_lines(opts["each_line"])
    items = _read_json(opts["from_json"]) if opts.get("from_json") else None
    source = opts.get("each_line") or opts.get("from_json")
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
    else:
        ranges = [[0, 0, 1]]
        kind = "single"
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
    return spec
