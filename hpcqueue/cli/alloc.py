"""`hpcqueue alloc ...`: allocation queues."""

from __future__ import annotations

import sys

import click

from hpcqueue.cli.common import get_server_dir, request, server_dir_option
from hpcqueue.cli.completion import profile_names, queue_refs
from hpcqueue.cli.output import (
    emit, output_option, print_fields, print_table, when, when_short, with_times,
)
from hpcqueue.model import format_duration

class OptionType(click.ParamType):
    """A queue option's kind (hpcqueue/autoalloc/options.py) as a click type: the same
    reading and checks as for its HPCQUEUE_* variable."""

    def __init__(self, kind):
        self.kind = kind
        self.name = kind.name

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.kind.from_text(value)
        except ValueError as e:
            self.fail(f"{value!r}: {e}", param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        names = self.kind.choices() if self.kind.choices else []
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]


#: what `alloc add` says of an option besides its help in the table
ADD_NOTES = {"time_limit": " Required unless the profile sets it."}


def _option(o, adding: bool = True):
    """The click option of queue option O, for `alloc add` (with its default) or for
    `alloc edit` (the new value)."""
    from hpcqueue.autoalloc.options import PATH, show_default

    shown = show_default(o) if adding else None
    kind = click.Path(dir_okay=False) if o.kind is PATH else OptionType(o.kind)
    text = o.help + (ADD_NOTES.get(o.field, "") if adding else "")
    return click.option(o.flag_name, o.field, type=kind, default=None,
                        help=text + (f"  [default: {shown}]" if shown is not None else ""))


def queue_options(fn):
    """The arguments and options of `alloc add` and `alloc dry-run`, from the table of queue
    options."""
    from hpcqueue.autoalloc.options import BY_FIELD, OPTIONS

    options = [
        click.argument("scheduler", type=OptionType(BY_FIELD["scheduler"].kind)),
        click.option("--profile", shell_complete=profile_names,
                     help="A site profile (SITE/NAME or NAME) to start from; flags given "
                          "here override it."),
    ]
    options += [_option(o) for o in OPTIONS if o.flag]
    options.append(click.argument("extra_args", nargs=-1, type=click.UNPROCESSED))
    for option in reversed(options):
        fn = option(fn)
    return fn


def _given(ctx, name: str) -> bool:
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                              ParameterSource.ENVIRONMENT)


def build_params(ctx, opts: dict):
    """QueueParams from the profile, HPCQUEUE_* variables and the flags given, in that
    order (see :func:`hpcqueue.autoalloc.params.build_params`)."""
    from hpcqueue.autoalloc.params import FLAGS, build_params

    return build_params(opts, given={p for p in FLAGS if _given(ctx, p)})


@click.group()
@server_dir_option
def alloc():
    """Allocation queues: the server submits batch jobs that boot workers."""


@alloc.command()
@server_dir_option
@queue_options
@click.option("--no-dry-run", is_flag=True,
              help="Skip the test submission (held, then cancelled) at add time.")
@output_option
@click.pass_context
def add(ctx, no_dry_run, output, **opts):
    """Add an allocation queue: `alloc add slurm --partition cpu --time-limit 1h`.

    Extra scheduler arguments go after `--`; each becomes a directive line.
    """
    params = build_params(ctx, opts)
    r = request(ctx, "alloc_add", timeout=180, params=params.to_dict(),
                dry_run=not no_dry_run)
    if output != "table":
        return emit(output, {"queue": r["queue"], "dry_run": not no_dry_run},
                    ids=[r["queue"]])
    click.echo(f"allocation queue {r['queue']} added"
               + ("" if no_dry_run else " (dry run passed)"))
    if r.get("probe"):
        click.echo(f"probe: {r['probe']}")


@alloc.command("dry-run")
@server_dir_option
@queue_options
@click.pass_context
def dry_run_cmd(ctx, **opts):
    """Print the script a queue would submit, and submit it held and cancel it.

    The script is printed as it is, whatever --output says."""
    import asyncio

    from hpcqueue.autoalloc.service import dry_run

    params = build_params(ctx, opts)
    script = asyncio.run(dry_run(params, get_server_dir(ctx)))
    sys.stdout.write(script)
    click.echo("dry run passed: the scheduler accepted the script", err=True)


def _queue_ref(value: str):
    return int(value) if value.isdigit() else value


@alloc.command("list")
@server_dir_option
@output_option
@click.pass_context
def list_(ctx, output):
    """Allocation queues, with their state and allocations."""
    rows = request(ctx, "alloc_list")["queues"]
    if output != "table":
        return emit(output, rows, ids=[q["id"] for q in rows])
    print_table(["ID", "NAME", "SCHEDULER", "STATE", "QUEUED", "RUNNING", "WORKERS", "REASON"],
                [[q["id"], q["name"], q["scheduler"], q["state"], q["queued"], q["running"],
                  q["workers"], q["pause_reason"] or q["last_error"]] for q in rows])


@alloc.command()
@server_dir_option
@click.argument("queue", shell_complete=queue_refs)
@output_option
@click.pass_context
def info(ctx, queue, output):
    """A queue's parameters and its allocations with their states and times."""
    q = request(ctx, "alloc_info", queue=_queue_ref(queue))
    q.pop("ok", None)
    if output != "table":
        allocs = [with_times(a, "submitted", "started", "ended") for a in q["allocations"]]
        return emit(output, dict(q, allocations=allocs), ids=[q["id"]])
    p = q["params"]
    print_fields([
        ("queue", q["id"]), ("name", q["name"]), ("scheduler", q["scheduler"]),
        ("transport", p.get("transport")), ("profile", p.get("profile")),
        ("state", q["state"]), ("reason", q["pause_reason"]),
        ("time limit", format_duration(p["time_limit"])), ("backlog", p["backlog"]),
        ("workers per alloc", p["workers_per_alloc"]),
        ("max worker count", p["max_worker_count"]),
        ("idle timeout", format_duration(p["idle_timeout"])),
        ("target drain", format_duration(p.get("target_drain"))),
        ("partition", p["partition"]),
        ("account", p["account"]), ("cpus per worker", p.get("cpus")),
        ("gpus per worker", p.get("gpus")), ("last error", q["last_error"]),
    ])
    print_table(["ALLOC", "JOB ID", "STATE", "WORKERS", "SUBMITTED", "STARTED", "ENDED",
                 "REASON"],
                [[a["id"], a["job_id"], a["state"], a["workers"], when_short(a["submitted"]),
                  when_short(a["started"]), when_short(a["ended"]), a["reason"]]
                 for a in q["allocations"]])


@alloc.command()
@server_dir_option
@click.argument("queue", shell_complete=queue_refs)
@output_option
@click.pass_context
def pause(ctx, queue, output):
    """Stop submitting allocations for a queue."""
    r = request(ctx, "alloc_pause", queue=_queue_ref(queue))
    if output != "table":
        return emit(output, {"queue": r["queue"], "state": r["state"]}, ids=[r["queue"]])
    click.echo(f"queue {queue} paused")


@alloc.command()
@server_dir_option
@click.argument("queue", shell_complete=queue_refs)
@output_option
@click.pass_context
def resume(ctx, queue, output):
    """Submit allocations for a paused queue again (clears its failure count)."""
    r = request(ctx, "alloc_resume", queue=_queue_ref(queue))
    if output != "table":
        return emit(output, {"queue": r["queue"], "state": r["state"]}, ids=[r["queue"]])
    click.echo(f"queue {queue} resumed")


@alloc.command()
@server_dir_option
@click.argument("queue", shell_complete=queue_refs)
@click.option("--force", is_flag=True, help="Cancel its allocations now instead of letting "
                                            "them drain.")
@output_option
@click.pass_context
def remove(ctx, queue, force, output):
    """Remove a queue: its allocations drain, or with --force are cancelled."""
    r = request(ctx, "alloc_remove", timeout=120, queue=_queue_ref(queue), force=force)
    r.pop("ok", None)
    if output != "table":
        return emit(output, r, ids=[r["queue"]])
    if r["cancelled"]:
        click.echo(f"queue {r['queue']} removed; cancelled {' '.join(r['cancelled'])}")
    elif r["draining"]:
        click.echo(f"queue {r['queue']} removed; draining {' '.join(r['draining'])}")
    else:
        click.echo(f"queue {r['queue']} removed")


def edit_options(fn):
    """The options `alloc edit` may change: those of the table marked editable."""
    from hpcqueue.autoalloc.options import EDITABLE

    for o in reversed(EDITABLE):
        fn = _option(o, adding=False)(fn)
    return fn


def _show(field: str, value) -> str:
    from hpcqueue.autoalloc.options import BY_FIELD, DURATION

    if value is None:
        return "-"
    return format_duration(value) if BY_FIELD[field].kind is DURATION else str(value)


def describe_changes(changes: dict) -> str:
    """`backlog 1 -> 3, idle timeout 5m00s -> 1m00s`."""
    return ", ".join(f"{k.replace('_', ' ')} {_show(k, old)} -> {_show(k, new)}"
                     for k, (old, new) in changes.items())


@alloc.command()
@server_dir_option
@click.argument("queue", shell_complete=queue_refs)
@edit_options
@click.option("--no-dry-run", is_flag=True,
              help="Change --time-limit without first submitting a held test job.")
@output_option
@click.pass_context
def edit(ctx, queue, no_dry_run, output, **opts):
    """Change options of a live queue: `alloc edit 1 --backlog 4 --max-worker-count 16`.

    The next cycle uses them; allocations already submitted keep their script.  Changes
    are journaled, and `alloc explain` lists them."""
    changes = {k: v for k, v in opts.items() if v is not None}
    if not changes:
        from hpcqueue.autoalloc.options import EDITABLE

        raise click.UsageError("nothing to change: give one or more of "
                               + ", ".join(o.flag_name for o in EDITABLE))
    r = request(ctx, "alloc_edit", timeout=180, queue=_queue_ref(queue), changes=changes,
                dry_run=not no_dry_run)
    if output != "table":
        return emit(output, {"queue": r["queue"], "changed": r["changed"],
                             "dry_run": r["dry_run"]}, ids=[r["queue"]])
    if not r["changed"]:
        click.echo(f"queue {r['queue']}: nothing changed (it had those values)")
        return
    click.echo(f"queue {r['queue']}: {describe_changes(r['changed'])}"
               + (" (dry run passed)" if r["dry_run"] else "")
               + "; from the next cycle on")


@alloc.command()
@server_dir_option
@click.argument("queue", shell_complete=queue_refs)
@output_option
@click.pass_context
def explain(ctx, queue, output):
    """Why the queue submits (or does not submit) allocations: recent decisions."""
    r = request(ctx, "alloc_explain", queue=_queue_ref(queue))
    r.pop("ok", None)
    if output != "table":
        decisions = [with_times(d, "t") for d in r["decisions"]]
        edits = [with_times(e, "t") for e in r.get("edits", [])]
        return emit(output, dict(r, decisions=decisions, edits=edits), ids=[])
    click.echo(f"queue {r['queue']} is {r['state']}"
               + (f": {r['pause_reason']}" if r["pause_reason"] else ""))
    now = r["now"]
    click.echo(f"now: submit {now['submit']}: {now['reason']}")
    for line in now["unfit"]:
        click.echo(f"  {line}")
    for e in r.get("status_errors", []):
        click.echo(f"allocation {e['id']} (job {e['job_id']}): status unreadable {e['count']} "
                   f"time(s) in a row, given up at {e['limit']} (last: {e['error']})")
    for u in r.get("unknown", []):
        click.echo(f"allocation {u['id']} (job {u['job_id']}) is unknown since "
                   f"{when(u['t'])}: {u['reason']}")
    for e in r.get("edits", []):
        click.echo(f"edited {when(e['t'])}: {describe_changes(e['changes'])}")
    if r["decisions"]:
        click.echo("recent decisions:")
    for d in r["decisions"][-10:]:
        click.echo(f"  {when(d['t'])}  submit {d['submit']}: {d['reason']}")


def _hours(value) -> str | None:
    return None if value is None else f"{value:.4g}"


def _fraction(value) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


@alloc.command()
@server_dir_option
@click.argument("queue", required=False, shell_complete=queue_refs)
@output_option
@click.pass_context
def efficiency(ctx, queue, output):
    """Core-hours allocated against core-hours the tasks used, per allocation and per queue
    (every queue without QUEUE), with the idle time before the first task and after the
    last."""
    r = request(ctx, "alloc_efficiency", queue=None if queue is None else _queue_ref(queue))
    queues = r["queues"]
    if output != "table":
        rows = [dict(q, allocations=[with_times(a, "started", "ended")
                                     for a in q["allocations"]]) for q in queues]
        return emit(output, rows, ids=[q["queue"] for q in rows])
    if not queues:
        click.echo("no allocation queues")
    for q in queues:
        used = _fraction(q["fraction_used"]) or "-"
        click.echo(f"queue {q['queue']}{' (' + q['name'] + ')' if q['name'] else ''}: "
                   f"{_hours(q['core_hours_used'])} of {_hours(q['core_hours_allocated'])} "
                   f"core-hours used ({used}); idle {format_duration(q['idle_before'])} "
                   f"before the first tasks, {format_duration(q['idle_after'])} after the "
                   "last" + (f"; cpus unknown for {q['unknown_cpus']} allocation(s)"
                             if q["unknown_cpus"] else ""))
        # ALLOCATED and USED in core-hours
        print_table(["ALLOC", "STATE", "CPUS", "WALL", "ALLOCATED", "USED", "USED %",
                     "IDLE BEFORE", "IDLE AFTER"],
                    [[a["id"], a["state"], a["cpus"], format_duration(a["wall_seconds"]),
                      _hours(a["core_hours_allocated"]), _hours(a["core_hours_used"]),
                      _fraction(a["fraction_used"]), format_duration(a["idle_before"]),
                      format_duration(a["idle_after"])] for a in q["allocations"]])


@alloc.command()
@server_dir_option
@click.argument("alloc_id")
@click.argument("stream", type=click.Choice(["stdout", "stderr", "script"]))
@click.pass_context
def log(ctx, alloc_id, stream):
    """Print an allocation's stdout, stderr or the exact script submitted (as it is,
    whatever --output says)."""
    path = request(ctx, "alloc_log", alloc=alloc_id, stream=stream)["path"]
    try:
        with open(path, "rb") as f:
            sys.stdout.buffer.write(f.read())
    except FileNotFoundError:
        click.echo(f"hpcqueue: {path} does not exist (yet)", err=True)
        return 1
    return 0
