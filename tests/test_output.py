"""How commands print (hpcqueue/cli/output.py): every command under `hpcqueue --output json`,
quiet ids, $HPCQUEUE_OUTPUT, tables that fit 80 columns, coloured states."""

from __future__ import annotations

import json
import re
from datetime import datetime

import click
import pytest
from conftest import hq

from hpcqueue.cli import cli
from hpcqueue.cli.output import fit_widths

#: commands that cannot run to their end in a test, and why
CANNOT_RUN = {
    "worker start": "runs in the foreground until the server goes (the cluster fixture runs it)",
    "worker deploy-ssh": "needs SSH hosts (tests/test_tunnel.py runs it against the CI sshd)",
    "journal stream": "streams until interrupted",
    "journal upgrade": "needs a journal of an older hpcqueue (tests/test_journal.py has them)",
    "alloc log": "needs an allocation that ran (tests/autoalloc covers it)",
    "dashboard": "a full-screen terminal UI (tests/test_dashboard.py drives it in tmux)",
}

#: commands whose output is content, not a report: printed as it is in every format
CONTENT = {
    "job cat": "the tasks' own output",
    "alloc dry-run": "the batch script",
    "completion": "a shell script",
    "journal export": "the journal's events, already JSON lines",
}

TIMES = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$")


def leaf_commands(command=cli, path=()):
    if isinstance(command, click.Group):
        for name in command.list_commands(None):
            yield from leaf_commands(command.get_command(None, name), (*path, name))
    else:
        yield " ".join(path)


def _name(args) -> str:
    """The command path of ARGS (the words before the first option or argument)."""
    names, command = [], cli
    for a in args:
        if not isinstance(command, click.Group) or a not in command.list_commands(None):
            break
        names.append(a)
        command = command.get_command(None, a)
    return " ".join(names)


def test_every_command_answers_in_json(cluster, tmp_path):
    journal = tmp_path / "journal.bin"
    cluster.start_server("--journal", journal, "--http-port", "0")
    cluster.start_worker("--cpus", "2")
    conf = tmp_path / "conf.yaml"
    # in the order they run: each a command line, with the exit code it must give
    plan = [
        (["config", "defaults", conf], 0),
        (["config", "validate", conf], 0),
        (["config", "show", "--blame"], 0),
        (["config", "profiles"], 0),
        (["server", "start", "--server-dir", tmp_path / "other", "--check-args"], 0),
        (["server", "info"], 0),
        (["server", "http-token"], 0),
        (["submit", "--array", "1-3", "--", "echo", "hi"], 0),
        (["submit", "--array", "1-2", "--stdout", "none", "--", "false"], 0),
        (["job", "wait", "1"], 0),
        (["job", "progress", "2"], 1),
        (["job", "list"], 0),
        (["job", "info", "1"], 0),
        (["job", "failed", "2"], 0),
        (["job", "cat", "1", "stdout"], 0),
        (["job", "close", "1"], 0),
        (["task", "list", "1"], 0),
        (["task", "info", "1", "1"], 0),
        (["task", "explain", "1", "1"], 0),
        (["job", "cancel", "1"], 0),
        (["job", "forget", "1"], 0),
        (["worker", "list"], 0),
        (["worker", "info", "1"], 0),
        (["alloc", "add", "local", "--name", "q", "--time-limit", "1m", "--no-dry-run"], 0),
        (["alloc", "dry-run", "local", "--time-limit", "1m"], 0),
        (["alloc", "list"], 0),
        (["alloc", "info", "q"], 0),
        (["alloc", "explain", "q"], 0),
        (["alloc", "edit", "q", "--backlog", "2"], 0),
        (["alloc", "efficiency", "q"], 0),
        (["alloc", "pause", "q"], 0),
        (["alloc", "resume", "q"], 0),
        (["alloc", "remove", "q"], 0),
        (["journal", "flush"], 0),
        (["journal", "compact"], 0),
        (["run", "--array", "1-2", "--stdout", "none", "--", "true"], 0),
        (["completion", "bash"], 0),
        (["worker", "stop", "all"], 0),
        (["server", "stop"], 0),
        # the journal of the stopped server
        (["journal", "check", journal], 0),
        (["journal", "export", journal], 0),
        (["journal", "prune", journal], 0),
        (["journal", "compact", journal], 0),
        (["journal", "repair", journal], 0),
    ]
    planned = {_name(args) for args, _ in plan}
    assert planned.isdisjoint(CANNOT_RUN)
    assert planned | set(CANNOT_RUN) == set(leaf_commands()), \
        "a command is neither run here nor listed in CANNOT_RUN with a reason"
    times = 0
    for args, code in plan:
        p = cluster.hq("--output", "json", *args, check=False, cwd=tmp_path, timeout=120)
        what = f"hpcqueue --output json {' '.join(map(str, args))}"
        assert "Traceback" not in p.stderr, f"{what}\n{p.stderr}"
        assert p.returncode == code, f"{what} exited {p.returncode}\n{p.stderr}"
        name = _name(args)
        if name == "journal export":  # JSON lines
            assert all(json.loads(line) for line in p.stdout.splitlines()), what
        elif name == "job cat":  # content: as it is
            assert p.stdout == "hi\n" * 3
        elif name not in CONTENT:
            times += len(_timestamps(json.loads(p.stdout)))
    assert times > 10  # the timestamps met above were all ISO 8601 with the zone


def _timestamps(data) -> list:
    """The values of DATA's timestamp keys that are set; asserts each is ISO 8601."""
    found = []
    if isinstance(data, list):
        for x in data:
            found += _timestamps(x)
    elif isinstance(data, dict):
        for k, v in data.items():
            if k in ("submitted", "ended", "start", "end", "started", "connected") and v:
                assert isinstance(v, str) and TIMES.match(v), (k, v)
                assert datetime.fromisoformat(v).tzinfo is not None
                found.append(v)
            else:
                found += _timestamps(v)
    return found


def test_quiet_and_the_environment(cluster, tmp_path):
    cluster.start_server()
    p = cluster.hq("submit", "--output", "quiet", "--stdout", "none", "--", "true")
    assert p.stdout == "1\n" and p.stderr == ""
    p = cluster.hq("--output", "quiet", "submit", "--array", "1-4", "--stdout", "none", "--",
                   "true")
    assert p.stdout == "2\n"
    p = cluster.hq("submit", "--array", "1-4", "--stdout", "none", "--", "true",
                   env={"HPCQUEUE_OUTPUT": "json"})
    assert json.loads(p.stdout) == {"job": 3, "tasks": 4}
    # the command's own --output wins over the environment
    p = cluster.hq("job", "list", "--output", "quiet", env={"HPCQUEUE_OUTPUT": "json"})
    assert p.stdout.split() == ["1", "2", "3"]
    p = cluster.hq("job", "list", env={"HPCQUEUE_OUTPUT": "ndjson"})
    assert [json.loads(line)["id"] for line in p.stdout.splitlines()] == [1, 2, 3]
    assert cluster.hq("job", "cancel", "all", "--output", "quiet").stdout.split() == \
        ["1", "2", "3"]
    # submit --wait under json: the job and its final state in one object
    cluster.start_worker()
    p = cluster.hq("--output", "json", "submit", "--wait", "--array", "1-2", "--stdout",
                   "none", "--", "false", check=False, timeout=60)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["job"] == 4
    assert [(j["id"], j["state"], j["failed"]) for j in out["jobs"]] == [(4, "failed", 2)]
    p = cluster.hq("job", "wait", "4", "--output", "quiet", check=False)
    assert p.returncode == 1 and p.stdout == ""
    p = cluster.hq("job", "list", check=False, env={"HPCQUEUE_OUTPUT": "yaml"})
    assert p.returncode == 2 and "yaml" in p.stderr and "Traceback" not in p.stderr


def _lines_fit(text: str, width: int = 80) -> None:
    assert text.strip()
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} > {width}: {line!r}"


COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7])m")


def test_tables_fit_80_columns_and_colour_states(cluster, tmp_path):
    conf = tmp_path / "xdg" / "hpcqueue"
    conf.mkdir(parents=True)
    (conf / "a-site-with-a-long-name.yaml").write_text(
        "profiles:\n  gpu-nodes-with-a-long-name:\n    scheduler: slurm\n"
        "    partition: a-partition-with-a-long-name\n"
        "    description: " + "a very long description of the profile " * 4 + "\n")
    env = {"COLUMNS": "80", "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    p = hq("config", "profiles", env=env)
    _lines_fit(p.stdout)
    assert "…" in p.stdout and "a-site-with-a-long-name" in p.stdout

    cluster.start_server()
    cluster.start_worker()
    name = "a job name much too long for any terminal " * 3
    cluster.hq("submit", "--name", name, "--array", "1-30", "--stdout", "none", "--", "true")
    cluster.hq("submit", "--array", "1-2", "--stdout", "none", "--", "false")
    cluster.hq("job", "wait", "all", check=False, timeout=60)
    cluster.hq("alloc", "add", "local", "--name", "q" * 60, "--time-limit", "1m",
               "--no-dry-run")
    for args in (["job", "list"], ["worker", "list"], ["alloc", "list"], ["alloc", "info", "1"],
                 ["job", "info", "1"], ["task", "list", "1"], ["config", "show", "--blame"]):
        _lines_fit(cluster.hq(*args, env=env).stdout)
    # a listing longer than the screen: fixed-width lines as the pages come, cut too
    long = {**env, "LINES": "3", "HPCQUEUE_PAGE_ROWS": "3"}  # more rows than the screen
    for args in (["job", "list"], ["task", "list", "1"]):
        out = cluster.hq(*args, env=long).stdout
        _lines_fit(out)
        assert len(out.splitlines()) == {"job": 3, "task": 31}[args[0]]
    assert "…" in cluster.hq("job", "list", env=long).stdout

    # colour only on a terminal (forced here) and never under NO_COLOR
    for extra in ({}, {"LINES": "5", "HPCQUEUE_PAGE_ROWS": "1"}):
        plain = cluster.hq("job", "list", env={**env, **extra}).stdout
        forced = cluster.hq("job", "list", env={**env, **extra, "FORCE_COLOR": "1"}).stdout
        bare = cluster.hq("job", "list", env={**env, **extra, "FORCE_COLOR": "1",
                                              "NO_COLOR": "1"}).stdout
        assert not COLOUR.search(plain) and not COLOUR.search(bare)
        assert COLOUR.search(forced), repr(forced)
        assert "\x1b[32mfinished" in forced and "\x1b[31mfailed" in forced


@pytest.mark.parametrize("widths,mins,room,want", [
    ([2, 40, 8], [2, 8, 8], 80, [2, 40, 8]),  # fits: unchanged
    ([2, 40, 8], [2, 8, 8], 30, [2, 20, 8]),  # the widest is cut
    ([30, 30, 5], [8, 8, 5], 41, [18, 18, 5]),  # the widest alike
    ([30, 30, 5], [20, 8, 5], 35, [20, 10, 5]),  # none below its least width
    ([20, 20], [20, 20], 10, [5, 5]),  # not even the least fit: all cut alike
])
def test_fit_widths(widths, mins, room, want):
    got = fit_widths(widths, mins, room)
    assert got == want and sum(got) <= room
