"""`hpcqueue job ...` and `hpcqueue task ...`."""

from __future__ import annotations

import os
import sys

import click

from hpcqueue.cli.common import (
    JobRef, JobSelectorType, TaskSelectorType, limit_option, pages, quiet_broken_pipe, request,
    server_dir_option,
)
from hpcqueue.cli.output import (
    RowWriter, emit, list_output_option, output_option, print_fields, when, with_times,
)
from hpcqueue.model import TaskState, JobState, format_duration

JOB_STATES = [s.value for s in JobState]
TASK_STATES = [s.value for s in TaskState]


@click.group()
@server_dir_option
def job():
    """List, inspect, wait for, close and cancel jobs."""


JOBS = JobSelectorType()
JOB_COLUMNS = ["ID", "NAME", "STATE", "TASKS", "WAITING", "RUNNING", "FINISHED", "FAILED",
               "CANCELED"]


@job.command("list")
@server_dir_option
@click.argument("jobs", type=JOBS, required=False)
@click.option("--filter", "filters", multiple=True, type=click.Choice(JOB_STATES),
              help="Only jobs in this state (repeatable).")
@limit_option
@list_output_option
@click.pass_context
def job_list(ctx, jobs, filters, limit, output):
    """Jobs, one line each: all of them, or JOBS (e.g. 1-3,7 or last)."""
    writer = RowWriter(output, JOB_COLUMNS, lambda j: [
        j["id"], j["name"], _state(j), j["tasks"], j["waiting"], j["running"], j["finished"],
        j["failed"], j["canceled"]], times=JOB_TIMES)
    fields = {"filter": list(filters)}
    if jobs is not None:
        fields["jobs"] = jobs
    try:
        for page in pages(ctx, "jobs", lambda p: len(p["jobs"]), limit, **fields):
            rows = page["jobs"]
            if limit is not None:
                rows = rows[:limit]
            writer.write(rows, last=page["next"] is None)
        writer.close()
    except BrokenPipeError:
        return quiet_broken_pipe()
    return 0


JOB_TIMES = ("submitted", "ended")


def _state(j: dict) -> str:
    """A job's state, and `open` while it takes more tasks (`submit --each-line -`)."""
    return f"{j['state']}+open" if j.get("open") else j["state"]


@job.command("info")
@server_dir_option
@click.argument("job_id", type=JobRef())
@output_option
@click.pass_context
def job_info(ctx, job_id, output):
    """One job in detail."""
    j = request(ctx, "job_info", job=job_id)
    j.pop("ok", None)
    if output != "table":
        return emit(output, with_times(j, *JOB_TIMES), ids=[j["id"]])
    spec = j["spec"]
    cmd = " ".join(spec.get("cmd") or []) or "(each line is a shell command)"
    runtime = (j["ended"] or 0) - j["submitted"] if j["ended"] else None
    pairs = [
        ("id", j["id"]), ("name", j["name"]), ("state", j["state"]),
        ("open", f"yes: it takes more tasks until closed (`hpcqueue job close {j['id']}`)"
         if j.get("open") else "no"),
        ("command", cmd),
        ("task ids", j["array"]), ("tasks", j["tasks"]),
        ("waiting", j["waiting"]), ("running", j["running"]), ("finished", j["finished"]),
        ("failed", j["failed"]), ("canceled", j["canceled"]),
        ("restarted tasks", j.get("restarted_tasks", 0)),
        ("cpus per task", spec.get("cpus")), ("priority", j["priority"]),
        ("submitted", when(j["submitted"])), ("ended", when(j["ended"])),
        ("makespan", format_duration(runtime) if runtime is not None else None),
        ("mean task time", format_duration(j["mean_runtime"])
         if j["mean_runtime"] is not None else None),
        ("stdout", spec.get("stdout")), ("stderr", spec.get("stderr")),
        ("submit dir", spec.get("submit_dir")),
    ]
    if spec.get("after"):
        pairs.append(("depends on", "jobs " + ",".join(map(str, spec["after"]))
                      + (" (to end, however)" if spec.get("after_any") else "")))
    if j.get("reason"):  # canceled by a dependency
        pairs.append(("canceled because", j["reason"]))
    if j.get("waiting_because"):  # only when its waiting tasks cannot run as things are
        pairs.append(("waiting because", j["waiting_because"]["message"]))
    print_fields(pairs)


@job.command("wait")
@server_dir_option
@click.argument("job_id", metavar="JOBS", type=JOBS)
@click.option("--progress", is_flag=True, help="Show a progress bar (on stderr) while waiting.")
@output_option
@click.pass_context
def job_wait(ctx, job_id, progress, output):
    """Wait until jobs end: JOBS is e.g. 3, 1-3,7, last or all (the jobs unfinished now).

    Prints each job's final state and counts (--output json: a list of them).
    Exit code 0 if every task of them finished, 1 if any failed or was canceled."""
    from hpcqueue.cli import waiting

    return waiting.report(waiting.wait(ctx, job_id, progress, unfinished=True), output)


@job.command("progress")
@server_dir_option
@click.argument("job_id", metavar="JOBS", type=JOBS)
@output_option
@click.pass_context
def job_progress(ctx, job_id, output):
    """Progress until the jobs end, on stderr: a line per job and a total, with an ETA
    (plain lines every 10 s when not on a terminal); then the final states, as `job wait`."""
    from hpcqueue.cli import waiting

    return waiting.report(waiting.wait(ctx, job_id, True), output)


@job.command("cancel")
@server_dir_option
@click.argument("job_id", metavar="JOBS", type=JOBS)
@output_option
@click.pass_context
def job_cancel(ctx, job_id, output):
    """Cancel the waiting and running tasks of JOBS (e.g. 3, 1-3,7, last or all).

    Quiet output: the ids of the jobs canceled."""
    ids = request(ctx, "cancel", jobs=job_id)["canceled"]
    if output != "table":
        emit(output, {"canceled": ids}, ids=ids)
    elif ids:
        click.echo(f"canceled job(s) {' '.join(map(str, ids))}")
    else:
        click.echo("nothing to cancel: the job has ended")


@job.command("forget")
@server_dir_option
@click.argument("job_id", metavar="JOBS", type=JOBS)
@output_option
@click.pass_context
def job_forget(ctx, job_id, output):
    """Drop ended jobs (finished, failed or canceled) from the server and its journal.

    JOBS is e.g. 3, 1-3,7, last or all (with `all`, the jobs that have ended).  An
    unfinished job is refused: cancel it or wait for it first.  Job ids are never reused."""
    ids = request(ctx, "forget", jobs=job_id)["forgotten"]
    if output != "table":
        emit(output, {"forgotten": ids}, ids=ids)
    elif ids:
        click.echo(f"forgot job(s) {' '.join(map(str, ids))}")
    else:
        click.echo("nothing to forget: no job has ended")


@job.command("close")
@server_dir_option
@click.argument("job_id", type=JobRef())
@output_option
@click.pass_context
def job_close(ctx, job_id, output):
    """Close an open job: it takes no more tasks, and ends when those it has have ended.

    A job is open while `submit --each-line -` streams lines into it; if that submit
    went away before the end of its input, this ends the job."""
    reply = request(ctx, "close", job=job_id)
    reply.pop("ok", None)
    if output != "table":
        emit(output, reply, ids=[reply["job"]] if reply["closed"] else [])
    elif reply["closed"]:
        click.echo(f"job {reply['job']} closed: {reply['tasks']} task(s)")
    else:
        click.echo(f"job {reply['job']} is not open: nothing to close")


@job.command("cat")
@server_dir_option
@click.argument("job_id", type=JobRef())
@click.argument("stream", type=click.Choice(["stdout", "stderr"]))
@click.option("--task", "task_id", type=int, help="Only this task.")
@click.option("--tasks", "ranges", type=TaskSelectorType(),
              help="Only these tasks, e.g. 1-100,200.")
@click.option("--failed", is_flag=True, help="Only the failed tasks.")
@click.option("--tail", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines of each task.")
@click.option("--all-instances", is_flag=True,
              help="Every run of a task, not only its latest (streamed jobs, or files named "
                   "with %{INSTANCE_ID}).")
@click.pass_context
def job_cat(ctx, job_id, stream, task_id, ranges, failed, tail, all_instances):
    """Print what the tasks of a job wrote to stdout or stderr, in task order."""
    reply = request(ctx, "cat", job=job_id, stream=stream, task=task_id, tasks=ranges,
                    failed=failed, all_instances=all_instances)
    from hpcqueue.taskoutput import write_output

    out = sys.stdout.buffer
    try:
        problem = write_output(out, reply, stream, task_id, ranges, tail, all_instances)
        out.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    if problem:
        click.echo(f"hpcqueue: job {reply['job']} {stream}: {problem}", err=True)
    return 0


@job.command("failed")
@server_dir_option
@click.argument("job_id", type=JobRef())
@output_option
@click.pass_context
def job_failed(ctx, job_id, output):
    """Failed tasks, one a line: the entry (for --each-line jobs) or the task id.

    The output can be fed back: `hpcqueue job failed 3 > again.txt` then
    `hpcqueue submit --each-line again.txt ...`.  Quiet output: the task ids.
    """
    failed = request(ctx, "failed", job=job_id)["failed"]
    if output != "table":
        return emit(output, failed, ids=[t["id"] for t in failed])
    for t in failed:
        click.echo(t["entry"] if t["entry"] is not None else t["id"])


@click.group()
@server_dir_option
def task():
    """List and inspect the tasks of a job."""


def _duration(t) -> str | None:
    if t["start"] and t["end"]:
        return format_duration(t["end"] - t["start"])
    return None


TASK_COLUMNS = ["ID", "STATE", "EXIT", "WORKER", "INSTANCE", "TIME"]
TASK_TIMES = ("start", "end")


@task.command("list")
@server_dir_option
@click.argument("job_id", type=JobRef())
@click.option("--tasks", "task_ids", type=TaskSelectorType(),
              help="Only these task ids, e.g. 1-100,200.")
@click.option("--filter", "filters", multiple=True, type=click.Choice(TASK_STATES),
              help="Only tasks in this state (repeatable).")
@limit_option
@list_output_option
@click.pass_context
def task_list(ctx, job_id, task_ids, filters, limit, output):
    """The tasks of a job, in id order, written as they come from the server."""
    from hpcqueue.listing import json_rows, page_ndjson, page_rows

    writer = RowWriter(output, TASK_COLUMNS, lambda t: [
        t["id"], t["state"], t["exit_code"], t["worker"], t["instance"], _duration(t)],
        times=TASK_TIMES)
    try:
        for page in pages(ctx, "tasks", lambda p: p["rows"], limit, job=job_id,
                          filter=list(filters), tasks=task_ids):
            last = page["next"] is None
            if output == "ndjson":
                writer.write([], last, text=page_ndjson(page))
            else:
                writer.write((json_rows if output == "json" else page_rows)(page), last)
        writer.close()
    except BrokenPipeError:
        return quiet_broken_pipe()
    return 0


@task.command("info")
@server_dir_option
@click.argument("job_id", type=JobRef())
@click.argument("task_id", type=int)
@output_option
@click.pass_context
def task_info(ctx, job_id, task_id, output):
    """One task: its state, exit code, times, worker and instance."""
    t = request(ctx, "task_info", job=job_id, task=task_id)["task"]
    if output != "table":
        return emit(output, with_times(t, *TASK_TIMES), ids=[t["id"]])
    pairs = [("id", t["id"]), ("state", t["state"]), ("exit code", t["exit_code"]),
             ("error", t.get("error")), ("worker", t["worker"]), ("instance", t["instance"]),
             ("started", when(t["start"])), ("ended", when(t["end"])),
             ("run time", _duration(t)), ("retries", t["retries"]),
             ("worker losses", t["crashes"])]
    if "entry" in t:
        pairs.insert(1, ("entry", t["entry"]))
    print_fields(pairs)


@task.command("explain")
@server_dir_option
@click.argument("job_id", type=JobRef())
@click.argument("task_id", type=int)
@output_option
@click.pass_context
def task_explain(ctx, job_id, task_id, output):
    """Why a task is not running: the cpus, resources or time left no connected worker
    has, no allocation queue that can serve it, a retry delay, or the tasks ahead of it."""
    why = request(ctx, "task_explain", job=job_id, task=task_id)
    why.pop("ok", None)
    if output != "table":
        return emit(output, why, ids=[])
    click.echo(f"job {why['job']} task {why['task']}: {why['state']}")
    if why["reason"] is not None:
        click.echo(f"waiting because ({why['reason']}): {why['message']}")
    else:
        click.echo(why["message"])
    for line in why["details"]:
        click.echo(f"  {line}")
