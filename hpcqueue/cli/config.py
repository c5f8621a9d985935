"""`hpcqueue config show|defaults|validate|profiles`."""

from __future__ import annotations

import sys

import click

from hpcqueue.cli.completion import profile_names
from hpcqueue.cli.output import emit, output_option, print_table


@click.group("config")
def config_group():
    """Layered configuration and site profiles."""


def _load():
    from hpcqueue import config

    return config.load().check()


def _show_value(v) -> str:
    from hpcqueue.model import format_duration

    return format_duration(v) if isinstance(v, float) else str(v)


@config_group.command()
@click.option("--profile", shell_complete=profile_names,
              help="Also resolve this profile (default: settings' profile).")
@click.option("--blame", is_flag=True, help="Say where each value came from.")
@output_option
def show(profile, blame, output):
    """The effective settings and profile values."""
    from hpcqueue.access import server_dir

    cfg = _load()
    rows = []
    settings = dict(cfg.settings)
    if "server-dir" not in settings:
        from hpcqueue.config import Value

        settings["server-dir"] = Value(str(server_dir()), "default")
    for key, v in sorted(settings.items()):
        rows.append((f"settings.{key}", v.value, v.source))
    ref = profile or (cfg.settings["profile"].value if "profile" in cfg.settings else None)
    if ref:
        prof = cfg.resolve(ref)
        rows.append(("profile", prof.qualified, "--profile" if profile else
                     cfg.settings["profile"].source))
        for key, v in sorted(cfg.effective(prof).items()):
            rows.append((key, v.value, v.source))
    else:
        for key, v in sorted(cfg.effective(None).items()):
            rows.append((key, v.value, v.source))
    if output != "table":
        return emit(output, [{"key": k, "value": v, "source": s} for k, v, s in rows])
    columns = ["KEY", "VALUE", "FROM"] if blame else ["KEY", "VALUE"]
    print_table(columns, [[k, _show_value(v), s][:len(columns)] for k, v, s in rows])


@config_group.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@output_option
def validate(files, output):
    """Check config files: each problem with its file, line and key (exit 1 if any).

    Quiet output: the files that have problems."""
    from hpcqueue.config.schema import parse

    results = []
    for path in files:
        _, _, problems = parse(path)
        results.append({"file": path, "ok": not problems,
                        "problems": [str(p) for p in problems]})
        if output != "table":
            continue
        for p in problems:
            click.echo(str(p), err=True)
        if not problems:
            click.echo(f"{path}: ok")
    if output != "table":
        emit(output, results, ids=[r["file"] for r in results if not r["ok"]])
    return 0 if all(r["ok"] for r in results) else 1


@config_group.command()
@output_option
def profiles(output):
    """The profiles every layer provides, and where they come from.

    Quiet output: the profile names."""
    cfg = _load()
    rows = []
    for name, p in sorted(cfg.profiles.items()):
        v = p.values
        rows.append({
            "profile": name, "scheduler": v["scheduler"].value if "scheduler" in v else None,
            "partition": v["partition"].value if "partition" in v else None,
            "description": v["description"].value if "description" in v else None,
            "source": ", ".join(p.files),
        })
    if output != "table":
        return emit(output, rows, ids=[r["profile"] for r in rows])
    print_table(["PROFILE", "SCHEDULER", "PARTITION", "DESCRIPTION", "SOURCE"],
                [[r["profile"], r["scheduler"], r["partition"], r["description"],
                  ", ".join(_short_path(f) for f in cfg.profiles[r["profile"]].files)]
                 for r in rows])


def _short_path(path: str) -> str:
    """A config file's path for a table: `packaged/` for those shipped, `~` for home."""
    import os

    from hpcqueue.config import PACKAGED

    if os.path.dirname(os.path.abspath(path)) == str(PACKAGED):
        return "packaged/" + os.path.basename(path)
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


DEFAULTS = """\
# hpcqueue configuration: every key with its default, commented out.
# Put this file in ~/.config/hpcqueue/ (user) or /etc/hpcqueue/ (system); later layers
# win: packaged site-configs -> /etc/hpcqueue -> ~/.config/hpcqueue -> HPCQUEUE_* -> flags.
# Check it with `hpcqueue config validate FILE`; see where values come from with
# `hpcqueue config show --blame`.

# site: mysite                # this file's site name (default: the file name)
# description: what this file is for

settings:
  # server-dir: ~/.hpcqueue-server   # $HPCQUEUE_SERVER_DIR
  # site: mysite                     # the active site: plain profile names resolve in it
  # profile: cpu                     # the profile `alloc add` uses without --profile

profiles:
  example:
    description: an example profile; copy and adapt
    scheduler: slurm          # `hpcqueue alloc add --help` names them (slurm, pbs, ...)
    # transport: cli          # cli | ssh, and per scheduler pyslurm (slurm), drmaa (sge)
    # login-host: login1      # with transport ssh
    # partition: cpu          # Slurm partition / PBS queue / SGE queue
    # account: myproject
    # qos: normal
    time-limit: 1h            # wall time of each allocation
    # backlog: 1              # allocations waiting in the scheduler's queue at once
    # workers-per-alloc: 1    # nodes per allocation, one worker each
    # max-worker-count: 8     # a hard limit on workers, queued and running
    # idle-timeout: 5m        # workers exit after being idle this long
    # target-drain: 10m       # size by throughput: workers to run the waiting tasks in 10m
    # pause-after: 3          # pause the queue after this many of its failures in a row
    # keep-dirs: 20           # keep the folders of this many ended allocations
    # cpus: 32                # CPUs per worker
    # gpus: 0                 # GPUs per worker
    # mem: 64G                # memory per node
    # modules: [python/3.11]  # `module load` before the worker starts
    # env: {OMP_NUM_THREADS: "1"}
    # worker-start-cmd: source /etc/profile.d/site.sh
    # worker-stop-cmd: echo done
    # extra-args: ["--constraint=cpu"]   # one directive line each
    # template: templates/mysite-slurm.sh.j2   # relative to this file
    # server-address: {hostname: login1-ib}   # or {interface: ib0}: how workers reach the server
"""


@config_group.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@output_option
def defaults(path, force, output):
    """Write a commented file with every key and its default (to PATH or stdout).

    Without PATH the file is printed as it is, whatever --output says."""
    import os

    if not path:
        sys.stdout.write(DEFAULTS)
        return 0
    if os.path.exists(path) and not force:
        raise click.UsageError(f"{path} exists: give --force to overwrite it")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(DEFAULTS)
    emit(output, {"wrote": path}, table=lambda: click.echo(f"wrote {path}"), ids=[path])
    return 0
