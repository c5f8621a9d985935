"""`hpcqueue submit`: all tasks at once, or the lines of stdin as they come.

Streaming (`--each-line -` from a pipe): the job is submitted open with no task, each
bundle of lines is an `append` request on the same connection, and EOF closes the job.
`--failures`/`--print-failures` (and `--wait`, `--progress`) keep a second connection that
waits for the job and gets its failed tasks pushed by the server as they fail.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import stat
import sys
import time

from typing import TYPE_CHECKING

import click

from hpcqueue.cli.common import check_reply, get_server_dir, server_dir_option
from hpcqueue.cli.jobspec import (
    Bundling, bundling, dependency_options, stream_options, task_options,
)
from hpcqueue.cli.output import emit, output_option, with_times
from hpcqueue.exceptions import (
    HpcqueueError, NoServerError, ProtocolError, RequestError, UsageError,
)
from hpcqueue.jobspec import build_spec, task_line

if TYPE_CHECKING:
    from hpcqueue.watch import FailedTask

BUNDLE_MAX_BYTES = 8 << 20  # a bundle is sent early once its lines hold this much


class Interrupted(HpcqueueError):
    exit_code = 130


@click.command(context_settings={"allow_interspersed_args": False})
@server_dir_option
@task_options
@stream_options
@dependency_options
@click.option("--failures", "failures_path", metavar="PATH",
              help="Write each task that fails for good to PATH as it fails (its line, JSON "
                   "element, or command with HPCQUEUE_TASK_ID); stays until the job ends.")
@click.option("--print-failures", is_flag=True,
              help="The same, to stdout (the other messages go to stderr).")
@click.option("--wait", is_flag=True, help="Wait until the job ends.")
@click.option("--progress", is_flag=True, help="Wait, showing a progress bar (on stderr).")
@output_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def submit(ctx, command, wait, progress, failures_path, print_failures, output, **opts):
    """Submit a job: CMD ARGS... run once per task (put them after `--`).

    Prints the job id (`--output quiet`: the id alone; `--output json`: an object with
    `job` and `tasks`, and with --wait the jobs' final states under `jobs`).

    \b
      hpcqueue submit --array 1-1000 -- ./sim.sh      # HPCQUEUE_TASK_ID = 1..1000
      hpcqueue submit --each-line params.txt -- ./sim.sh   # HPCQUEUE_ENTRY = a line
      hpcqueue submit --each-line commands.txt        # each line is a shell command
      tail -f tasks.txt | hpcqueue submit --each-line -    # each line runs as it comes
      hpcqueue submit --depends-on last -- ./reduce.sh     # after the last job succeeded
    """
    if print_failures and output in ("json", "ndjson"):
        raise UsageError(f"--print-failures writes the failures to stdout: it cannot be "
                         f"combined with --output {output} (use --failures PATH)")
    bundles = bundling(opts, _stdin_is_file())
    spec = build_spec(opts, command, stream=bundles is not None)
    report = FailureReport(failures_path, print_failures, spec) \
        if failures_path or print_failures else None
    err = print_failures  # stdout is for the failures then
    say = _Say(output, err)

    from hpcqueue.access import connect

    conn = connect(get_server_dir(ctx), timeout=300)
    try:
        reply = _call(conn, "submit", spec=spec)
        job_id = reply["job"]
        say.result = {"job": job_id, "tasks": reply["tasks"]}
        say.id(job_id)
        if reply.get("existing"):
            say.result["existing"] = True
            say(f"job {job_id} already holds unique key {spec['unique']!r} and is "
                f"unfinished: not submitted again ({reply['tasks']} task(s))")
            return say.done()
        if bundles is None:
            say(f"job {job_id} submitted: {reply['tasks']} task(s)")
        else:
            say(f"job {job_id} submitted, open: its tasks are the lines of stdin, "
                "sent as they come")
        attendant = None
        if report is not None or (bundles is not None and (wait or progress)):
            attendant = Attendant(ctx, job_id, progress, report)
        if bundles is not None:
            try:
                sent = Streamer(conn, job_id, bundles, spec["shell"], attendant).run()
            except BaseException:
                if attendant is not None:
                    attendant.close()
                raise
            say.result["tasks"] = sent
            say(f"job {job_id} closed: {sent} task(s)")
    finally:
        conn.close()
    from hpcqueue.cli import waiting

    jobs = None
    if attendant is not None:
        jobs = attendant.finish()
    elif wait or progress:
        jobs = waiting.wait(ctx, job_id, progress)
    if jobs is None:
        return say.done()
    if output != "table":  # the final states go into the one JSON object
        say.result["jobs"] = [with_times(j, "submitted", "ended") for j in jobs]
        say.done()
        return waiting.report(jobs, "quiet")  # exit code 1 if a task failed
    with contextlib.redirect_stdout(sys.stderr) if err else contextlib.nullcontext():
        return waiting.report(jobs)


class _Say:
    """What `submit` prints: lines for people (table), the job id at once (quiet), or one
    JSON object at the end (json, ndjson)."""

    def __init__(self, output: str, err: bool):
        self.output, self.err = output, err
        self.result: dict = {}

    def __call__(self, line: str) -> None:
        if self.output == "table":
            click.echo(line, err=self.err)

    def id(self, job_id: int) -> None:
        if self.output == "quiet" and not self.err:
            emit("quiet", None, ids=[job_id])  # at once: a stream may run long

    def done(self) -> int:
        if self.output in ("json", "ndjson"):
            emit(self.output, self.result)
        return 0


def _stdin_is_file() -> bool:
    try:
        return stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode)
    except (OSError, ValueError):  # no stdin at all
        return True


def _call(conn, op: str, **fields) -> dict:
    conn.send({"op": op, **fields})
    return check_reply(conn.recv())


# ------------------------------------------------------------------ failures


class FailureReport:
    """Where --failures and --print-failures write each task that failed for good: its line
    (--each-line), its JSON element (--from-json), or its command with its task id."""

    def __init__(self, path: str | None, to_stdout: bool, spec: dict):
        self.outs = []
        if path:
            try:
                self.outs.append(open(path, "w", encoding="utf-8", errors="surrogateescape"))
            except OSError as e:
                raise UsageError(f"--failures: cannot write {path!r}: {e.strerror}") from None
        if to_stdout:
            self.outs.append(sys.stdout)
        self.cmd = shlex.join(spec["cmd"] or [])
        self.count = 0

    def line(self, task: FailedTask) -> str:
        if task.entry is not None:
            return task.entry
        return f"HPCQUEUE_TASK_ID={task.id} {self.cmd}"

    def write(self, rows: list[FailedTask]) -> None:
        text = "".join(self.line(r) + "\n" for r in rows)
        self.count += len(rows)
        for out in self.outs:
            out.write(text)
            out.flush()

    def close(self) -> None:
        for out in self.outs:
            if out is not sys.stdout:
                out.close()


class Attendant:
    """A watch of one job (:meth:`hpcqueue.Client.watch`, a connection of its own): the
    server pushes the job's failed tasks (to a FailureReport) and its progress, then its
    final summary when it has ended."""

    def __init__(self, ctx, job_id: int, progress: bool, report: FailureReport | None):
        from hpcqueue.client import Client

        self.report = report
        self.bar = None
        self.final: list[dict] | None = None
        self.watch = Client(get_server_dir(ctx)).watch(
            [job_id], 0.25 if progress else None, failures=report is not None)
        if progress:
            from hpcqueue.progress import ProgressBar

            self.bar = ProgressBar().__enter__()

    def fileno(self) -> int:  # for select()
        return self.watch.fileno()

    def take(self) -> None:
        """Read one message (it has come: select() said so, or finish() waits for it)."""
        from hpcqueue.cli.waiting import final_row
        from hpcqueue.watch import Failures

        item = next(self.watch)
        if isinstance(item, Failures):
            if self.report is not None:
                self.report.write(list(item))
            return
        if self.watch.final is not None:
            self.final = [final_row(j) for j in self.watch.final]
        if self.bar is not None:
            self.bar.update([j.as_dict() for j in item])

    def finish(self) -> list[dict]:
        """The job's summary once it has ended."""
        try:
            while self.final is None:
                self.take()
            return self.final
        finally:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        if self.report is not None:
            self.report.close()
        self.watch.close()


# ------------------------------------------------------------------ streaming


class Streamer:
    """Reads stdin as it comes and appends its lines to the open job in bundles; closes the
    job at EOF.  One select() loop, no thread: stdin, the bundle's deadline and the
    attendant's connection (failures pushed meanwhile)."""

    def __init__(self, conn, job_id: int, bundles: Bundling, shell: bool,
                 attendant: Attendant | None):
        self.conn, self.job_id, self.bundles, self.shell = conn, job_id, bundles, shell
        self.attendant = attendant
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.since: float | None = None  # when the oldest unsent line came
        self.sent = 0
        self.lineno = 0

    def run(self) -> int:
        """Stream until EOF, then close the job; returns how many tasks were sent."""
        try:
            self._read_all()
            self._flush()
            _call(self.conn, "close", job=self.job_id)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: job {self.job_id} stays open with the "
                              f"{self.sent} task(s) sent so far; `hpcqueue job close "
                              f"{self.job_id}` ends it") from None
        except (ProtocolError, NoServerError, ConnectionError, TimeoutError) as e:
            raise HpcqueueError(f"lost the server while sending tasks ({e}): job "
                                f"{self.job_id} stays open with the {self.sent} task(s) it "
                                f"got; `hpcqueue job close {self.job_id}` ends it") from None
        return self.sent

    def _read_all(self) -> None:
        fd = sys.stdin.fileno()
        wait = self.bundles.wait
        rest = b""
        while True:
            timeout = None if self.since is None else max(0.0, self.since + wait
                                                          - time.monotonic())
            watched = [fd]
            if self.attendant is not None and self.attendant.final is None:
                watched.append(self.attendant)
            readable, _, _ = select.select(watched, [], [], timeout)
            if self.attendant in readable:
                self.attendant.take()
                if self.attendant.final is not None:  # ended: canceled meanwhile
                    raise HpcqueueError(f"job {self.job_id} ended while stdin was still "
                                        f"being read (canceled?): {self.sent} task(s) were "
                                        "sent, the lines after them were not")
            if fd in readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self._add(rest)
                    return
                complete, newline, rest = (rest + chunk).rpartition(b"\n")
                if newline:
                    self._add(complete)
            if self.since is not None and time.monotonic() - self.since >= wait:
                self._flush()

    def _add(self, data: bytes) -> None:
        """Complete lines of stdin: each a task, sent once a bundle is full."""
        if not data:
            return
        now = time.monotonic()
        size = self.bundles.size
        for line in data.decode("utf-8", errors="surrogateescape").splitlines():
            self.lineno += 1
            if not task_line(line, self.shell):
                continue
            bad = _bad_line(line)
            if bad:
                self._flush()
                _call(self.conn, "close", job=self.job_id)
                raise UsageError(f"line {self.lineno} of stdin {bad}, which a task's line "
                                 f"cannot: job {self.job_id} was closed with the {self.sent} "
                                 "task(s) before it")
            self.pending.append(line)
            self.pending_bytes += len(line)
            if self.since is None:
                self.since = now
            if len(self.pending) >= size or self.pending_bytes >= BUNDLE_MAX_BYTES:
                self._flush()

    def _flush(self) -> None:
        if not self.pending:
            self.since = None
            return
        try:
            reply = _call(self.conn, "append", job=self.job_id, entries=self.pending)
        except RequestError as e:
            raise RequestError(f"{e} ({self.sent} task(s) were sent before)") from None
        self.sent = reply["tasks"]
        self.pending, self.pending_bytes, self.since = [], 0, None


def _bad_line(line: str) -> str | None:
    """Why LINE cannot be a task's entry, or None."""
    if "\0" in line:
        return "holds a NUL character"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept as surrogates
        return "is not UTF-8 text"
    return None
