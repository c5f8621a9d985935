"""Reading what tasks wrote, as the server's `cat` reply points to it: the tasks' files
(``stdout``/``stderr`` of a job), or the job's stream logs (``stream``).  `job cat` writes
it to stdout, :meth:`hpcqueue.client.Task.output` returns it, and the dashboard shows its
tail; the bytes are read here, not by the server."""

from __future__ import annotations

import os
from typing import BinaryIO, Callable, Iterable

Keep = Callable[[int], bool]


def write_output(out: BinaryIO, reply: dict, stream: str, task: int | None = None,
                 tasks: str | None = None, tail: int | None = None,
                 all_instances: bool = False) -> str | None:
    """Write to OUT what the tasks of a `cat` REPLY wrote to STREAM, in task order (TASK,
    TASKS: the tasks asked for; TAIL: only the last lines of each).  Returns a line about
    what could not be read, or None."""
    if "dir" in reply:
        keep, bounds = keeper(task, tasks, reply.get("failed"))
        return write_streamed(out, reply["dir"], stream, keep, bounds, tail, all_instances)
    return write_files(out, reply["files"], tail)


def write_files(out: BinaryIO, files: Iterable, tail: int | None) -> str | None:
    """Write the task files in order; a file that is not there (a task that never wrote
    it) is skipped quietly.  Returns a line about those that could not be read."""
    from hpcqueue.streamlog import tail_lines

    bad, first = 0, None
    for _, path in files:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        except OSError as e:
            bad += 1
            first = first or f"{path}: {e.strerror}"
            continue
        with f:
            try:
                if tail is not None:
                    out.write(file_tail(f, tail, tail_lines))
                    continue
                while chunk := f.read(1 << 16):
                    out.write(chunk)
            except BrokenPipeError:
                raise
            except OSError as e:
                bad += 1
                first = first or f"{path}: {e.strerror}"
    return f"{bad} task file(s) could not be read (first: {first})" if bad else None


def file_tail(f: BinaryIO, n: int, tail_lines) -> bytes:
    """The last N lines of an open file, read from its end."""
    size = os.fstat(f.fileno()).st_size
    block = 1 << 16
    while True:
        start = max(0, size - block)
        f.seek(start)
        data = f.read(size - start)
        if start == 0 or data.count(b"\n") > n:
            return tail_lines(data, n)
        block *= 4


def write_streamed(out: BinaryIO, directory: str, stream: str, keep: Keep, bounds,
                   tail: int | None, all_instances: bool) -> str | None:
    """Write the output of a streamed job's tasks from its logs in DIRECTORY, reading only
    the parts of them that hold the tasks KEEP keeps.  Returns a line about skipped
    damage."""
    from hpcqueue.streamlog import JobLogs, tail_lines

    with JobLogs(directory) as logs:
        for e in logs.ended(keep, all_instances, bounds):
            data = logs.output(e, stream).data
            out.write(data if tail is None else tail_lines(data, tail))
        return logs.damage.message()


def keeper(task: int | None, tasks: str | None, failed: Iterable[int] | None
           ) -> tuple[Keep, tuple[int, int] | None]:
    """A predicate on task ids for the tasks asked for (one TASK, TASKS as '1-100,200', or
    the FAILED ones), and the bounds (lo, hi) of the ids it keeps (None: no bounds)."""
    if failed is not None:
        wanted = set(failed)
        return wanted.__contains__, (min(wanted), max(wanted)) if wanted else (1, 0)
    if task is not None:
        return (lambda t: t == task), (task, task)
    if tasks:
        from functools import partial

        from hpcqueue.selectors import in_spans, parse_tasks

        spans = parse_tasks(tasks)
        return partial(in_spans, spans), (spans[0][0], spans[-1][1])
    return (lambda t: True), None
