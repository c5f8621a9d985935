"""Shell completion: `hpcqueue completion bash|zsh|fish` prints the script, and the
completers that know job ids, queue names and worker ids (asking the server, when one is
up) and profile names (from the config layers).

Click's protocol underneath: the script calls `hpcqueue` with $_HPCQUEUE_COMPLETE set, and
click asks the completers.  A completer never fails: with no server, or a broken config, it
offers nothing.
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
ENV_COMPLETE = "_HPCQUEUE_COMPLETE"
ASK_TIMEOUT = 2.0  # seconds a completer waits for the server


@click.command(short_help="Print a shell completion script (bash, zsh or fish).")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the completion script for SHELL; it completes commands, options, job ids,
    queue names, worker ids and profile names.

    \b
      bash:  eval "$(hpcqueue completion bash)"     # in ~/.bashrc
      zsh:   eval "$(hpcqueue completion zsh)"      # in ~/.zshrc
      fish:  hpcqueue completion fish > ~/.config/fish/completions/hpcqueue.fish
    """
    from click.shell_completion import get_completion_class

    from hpcqueue.cli import cli

    script = get_completion_class(shell)(cli, {}, "hpcqueue", ENV_COMPLETE).source()
    click.echo(script)


def _ask(ctx: click.Context, op: str, **fields) -> dict | None:
    """The server's reply, or None (no server, an old one, any trouble)."""
    from hpcqueue.cli.common import request

    try:
        return request(ctx, op, timeout=ASK_TIMEOUT, **fields)
    except Exception:  # completion must stay quiet whatever goes wrong
        return None


def _items(pairs, incomplete: str):
    from click.shell_completion import CompletionItem

    return [CompletionItem(value, help=help) for value, help in pairs
            if value.startswith(incomplete)]


def job_ids(ctx: click.Context, param, incomplete: str):
    """The ids of the server's jobs (newest first), and `last`."""
    reply = _ask(ctx, "jobs", filter=[], limit=200)
    pairs = [("last", "the newest job")]
    if reply is not None:
        jobs = sorted(reply.get("jobs") or [], key=lambda j: -j["id"])
        pairs += [(str(j["id"]), f"{j.get('name') or ''} {j.get('state', '')}".strip())
                  for j in jobs]
    return _items(pairs, incomplete)


def job_selectors(ctx: click.Context, param, incomplete: str):
    """Job ids, `last` and `all`."""
    from click.shell_completion import CompletionItem

    items = job_ids(ctx, param, incomplete)
    if "all".startswith(incomplete):
        items.append(CompletionItem("all", help="every job"))
    return items


def queue_refs(ctx: click.Context, param, incomplete: str):
    """The allocation queues' ids and names."""
    reply = _ask(ctx, "alloc_list")
    pairs = []
    for q in (reply or {}).get("queues") or []:
        pairs.append((str(q["id"]), f"{q.get('name') or ''} {q.get('scheduler', '')}".strip()))
        if q.get("name"):
            pairs.append((str(q["name"]), f"queue {q['id']}"))
    return _items(pairs, incomplete)


def worker_ids(ctx: click.Context, param, incomplete: str):
    """The connected workers' ids (and `all`, for `worker stop`)."""
    reply = _ask(ctx, "workers", all=False)
    pairs = [(str(w["id"]), w.get("hostname") or "") for w in (reply or {}).get("workers") or []]
    if param is not None and param.nargs == -1:
        pairs.append(("all", "every worker"))
    return _items(pairs, incomplete)


def profile_names(ctx: click.Context, param, incomplete: str):
    """The site profiles every config layer provides (SITE/NAME)."""
    try:
        from hpcqueue import config

        profiles = config.load().profiles
    except Exception:  # a broken config file: nothing to offer
        return []
    pairs = []
    for name, p in sorted(profiles.items()):
        d = p.values.get("description")
        pairs.append((name, d.value if d is not None else ""))
    return _items(pairs, incomplete)
