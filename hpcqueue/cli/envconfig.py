"""Settings of the long-running commands from the environment: ``HPCQUEUE_<OPTION>``.

`from_env` gives every option of a command the variable named after its long option,
upper-cased, dashes to underscores: ``--port`` reads ``HPCQUEUE_PORT``, ``--idle-timeout``
``HPCQUEUE_IDLE_TIMEOUT``, ``-v/--verbose`` ``HPCQUEUE_VERBOSE`` (a count: 1 or 2).  So an
option added to such a command later gets its variable with no more code.  Layers, later
ones winning: the default, the variable, the flag.  A flag's variable takes 1/true/yes/on or
0/false/no/off; an option given several times takes a space-separated list.  An empty
variable counts as unset.  A value that does not convert is refused naming the variable.

Options that do something rather than set something (``--check-args``,
``--write-config-defaults``) have no variable.  An option that already names its own
variable (``--server-dir``: ``HPCQUEUE_SERVER_DIR``) keeps it.

A task sees the environment of the worker that runs it, plus names the worker sets for it
(hpcqueue/worker/runner.py).  Those names are never read as settings (`RESERVED`), with one
deliberate exception: ``HPCQUEUE_CPUS``, the task's CPU count, is what ``worker start
--cpus`` reads, so a worker started inside a task offers the CPUs that task was given, not
the whole node.  Any other ``HPCQUEUE_*`` setting the outer worker had is inherited by
whatever hpcqueue command the task runs, like any environment variable; a task unsets it
(``env -u``) or gives the flag.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click
from click.core import ParameterSource

from hpcqueue.exceptions import UsageError

PREFIX = "HPCQUEUE_"
#: names that mean something else, which no option may take as its variable
RESERVED = frozenset({
    # set by a worker for each task it runs (runner.py)
    "HPCQUEUE_JOB_ID", "HPCQUEUE_TASK_ID", "HPCQUEUE_INSTANCE_ID", "HPCQUEUE_ENTRY",
    "HPCQUEUE_TASK_DIR",
    # set by an allocation's job script for its workers (autoalloc)
    "HPCQUEUE_ALLOC_ID", "HPCQUEUE_ALLOC_END",
    # read by the config layers (hpcqueue/config)
    "HPCQUEUE_SYSTEM_CONFIG_DIR", "HPCQUEUE_SITE", "HPCQUEUE_PROFILE",
})
#: options that do something rather than set something: never from the environment
ACTIONS = frozenset({"check_args", "write_config_defaults"})


def env_name(param: click.Parameter) -> str:
    """HPCQUEUE_<OPTION> for an option: its longest name, upper-cased, dashes to
    underscores."""
    longest = max(param.opts, key=len).lstrip("-")
    return PREFIX + longest.upper().replace("-", "_")


def from_env(command: click.Command) -> click.Command:
    """Let every option of `command` be set by HPCQUEUE_<OPTION> (apply it above the
    options: ``@from_env`` first, then ``@click.command``...)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.name in ACTIONS or param.envvar:
            continue
        name = env_name(param)
        if name in RESERVED:
            raise RuntimeError(f"option {max(param.opts, key=len)} of `{command.name}` would "
                               f"read ${name}, which means something else: rename the option")
        param.envvar = name
        param.show_envvar = True
        param.process_value = _naming_the_variable(param, param.process_value)
    return command


def _naming_the_variable(param: click.Option, process):
    def process_value(ctx: click.Context, value):
        try:
            return process(ctx, value)
        except click.BadParameter as e:
            if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
                raise
            flag = max(param.opts, key=len)
            raw = os.environ.get(param.envvar, "")
            why = e.message.rstrip(". ")
            raise UsageError(f"${param.envvar}={raw!r} is not a valid {flag}: {why}; fix or "
                             f"unset the variable, or give {flag}") from None

    return process_value


def source(ctx: click.Context, name: str) -> str:
    """Where the value of parameter `name` came from: default, environment $X, or flag
    (looking at the parent commands too, for --server-dir)."""
    c = ctx
    while c is not None:
        src = c.get_parameter_source(name)
        if src is ParameterSource.COMMANDLINE:
            return "flag"
        if src is ParameterSource.ENVIRONMENT:
            param = next((p for p in c.command.params if p.name == name), None)
            envvar = param.envvar if param is not None else None
            return f"environment ${envvar}" if envvar else "environment"
        c = c.parent
    return "default"


def settings(ctx: click.Context, values: dict | None = None) -> list[tuple]:
    """(option, value as a variable would hold it or None, where it came from) for each
    setting of the command, in its order; `values` gives the value of an option that does
    not pass one to the command (--server-dir)."""
    values = values or {}
    out = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in ACTIONS:
            continue
        src = source(ctx, param.name)
        value = values.get(param.name, ctx.params.get(param.name))
        out.append((param, shell_value(param, value, src), src))
    return out


def shell_value(param: click.Option, value, src: str) -> str | None:
    """The value as a variable would hold it; None for no value."""
    if src.startswith("environment") and isinstance(param.envvar, str):
        return os.environ.get(param.envvar)
    if src == "default" and isinstance(param.default, str):
        return param.default  # as written: "1s", not 1.0
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def export_lines(ctx: click.Context, values: dict | None = None) -> list[str]:
    """`export HPCQUEUE_X=value` for every setting of the command (shell-quoted), as it
    would be used now; a setting with no value is a commented line."""
    lines = []
    for param, text, _ in settings(ctx, values):
        if not isinstance(param.envvar, str):
            continue
        if text is None:
            lines.append(f"# export {param.envvar}=  # {max(param.opts, key=len)}: not set")
        else:
            lines.append(f"export {param.envvar}={shlex.quote(text)}")
    return lines
