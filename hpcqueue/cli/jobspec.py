"""The options of `submit` (and `run`) that describe tasks, and how `submit` bundles the
lines of stdin; :mod:`hpcqueue.jobspec` turns them into a job spec."""

from __future__ import annotations

from dataclasses import dataclass

import click

from hpcqueue.cli.common import DURATION
from hpcqueue.exceptions import UsageError
from hpcqueue.jobspec import DEFAULT_STDOUT
from hpcqueue.model import MAX_COUNT, parse_priority, parse_retry_delay


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
        # issue 14's task options
        click.option("--tasks", "tasks", metavar="SPEC",
                     help="With --each-line or --from-json: run only these tasks, under "
                          "the ids they have in the whole file (0 for its first), e.g. to "
                          "run failed ones again: 3,17,40-45."),
        click.option("--max-fails", type=click.IntRange(min=1), metavar="N",
                     help="Cancel the job once N of its tasks have failed (for good)."),
        click.option("--stdin", "stdin", metavar="FILE",
                     help="Give each task FILE on its stdin (`-`: what this command "
                          "reads on its stdin, read once); kept once per job, at most 16 MiB."),
        click.option("--task-dir", is_flag=True,
                     help="Give each task an empty temporary folder ($HPCQUEUE_TASK_DIR), "
                          "removed when the task ends."),
        click.option("--keep-task-dir-on-fail", is_flag=True,
                     help="With --task-dir: keep the folder of a task that failed (its "
                          "error names it)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def dependency_options(fn):
    """`submit`'s options for a job that waits for other jobs (see hpcqueue.deps)."""
    options = [
        click.option("--depends-on", "depends_on", metavar="JOBS",
                     help="Start only when these jobs have ended with every task finished, "
                          "e.g. 3, 1-3,7 or last; if one fails or is canceled, this job is "
                          "canceled with the reason."),
        click.option("--depends-on-ok", "depends_on_ok", is_flag=True,
                     help="With --depends-on: say so explicitly (the default): every task "
                          "of those jobs must have succeeded."),
        click.option("--depends-on-any", "depends_on_any", is_flag=True,
                     help="With --depends-on: start once those jobs have ended, however "
                          "they ended (not canceled when one fails)."),
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
