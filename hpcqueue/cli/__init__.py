"""The `hpcqueue` command line.

`main` turns every user mistake into one line on stderr and a non-zero exit
code; a traceback means a bug of ours.
"""

from __future__ import annotations

import sys

import click

from hpcqueue import __version__
from hpcqueue.cli.common import server_dir_option
from hpcqueue.cli.output import global_output_option
from hpcqueue.exceptions import HpcqueueError


#: command name -> "module:attribute" of the command; a module is imported when its command
#: is used (or listed by --help), so `hpcqueue job info` loads only what it runs
COMMANDS = {
    "server": "hpcqueue.cli.server:server",
    "worker": "hpcqueue.cli.worker:worker",
    "submit": "hpcqueue.cli.submit:submit",
    "job": "hpcqueue.cli.jobs:job",
    "task": "hpcqueue.cli.jobs:task",
    "journal": "hpcqueue.cli.journal:journal",
    "run": "hpcqueue.cli.run:run",
    "alloc": "hpcqueue.cli.alloc:alloc",
    "config": "hpcqueue.cli.config:config_group",
    "completion": "hpcqueue.cli.completion:completion",
    "dashboard": "hpcqueue.cli.dashboard:dashboard",
}


class LazyGroup(click.Group):
    """The top-level group, whose commands are imported when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands and name in COMMANDS:
            import importlib

            module, attr = COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands.get(name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hpcqueue")
@server_dir_option
@global_output_option
def cli():
    """A task queue for HPC clusters.

    Start a server, start workers (by hand or in batch jobs), submit tasks.
    `hpcqueue run` does all three in one process, with no cluster.

    `--output json` (or $HPCQUEUE_OUTPUT) makes every command answer in JSON;
    `hpcqueue completion bash` prints a shell completion script.
    """


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv=None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="hpcqueue", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # a bare group: its help, as --help
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "hpcqueue"
        click.echo(f"hpcqueue: error: {_one_line(e.format_message())} "
                   f"(see `{where} --help`)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"hpcqueue: error: {_one_line(e.format_message())}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("hpcqueue: interrupted", err=True)
        sys.exit(130)
    except HpcqueueError as e:
        click.echo(f"hpcqueue: error: {_one_line(e)}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("hpcqueue: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(141)
    sys.exit(rv if isinstance(rv, int) else 0)
