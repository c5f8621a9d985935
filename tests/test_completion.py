"""Shell completion (hpcqueue/cli/completion.py): the scripts click writes, and the
completers that ask the server for job ids and queue names, and the config for profiles."""

from __future__ import annotations

import pytest
from click.shell_completion import get_completion_class
from conftest import hq

from hpcqueue.cli import cli


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(tmp_path, shell):
    p = hq("completion", shell)
    want = get_completion_class(shell)(cli, {}, "hpcqueue", "_HPCQUEUE_COMPLETE").source()
    assert p.stdout == want + "\n" and p.stderr == ""
    assert f"_HPCQUEUE_COMPLETE={shell}_complete" in p.stdout.replace("complete_", "complete")


def complete(words: str, server_dir, shell: str = "bash", env=None) -> list[str]:
    """What the completion protocol offers for the last word of WORDS (bash: TYPE,VALUE
    lines; the values are returned)."""
    args = words.split(" ")
    p = hq(server_dir=server_dir, env={
        "_HPCQUEUE_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
        "COMP_CWORD": str(len(args) - 1), **(env or {})})
    assert p.stderr == "" and "Traceback" not in p.stdout
    return [line.split(",", 1)[1] for line in p.stdout.splitlines() if line]


def test_job_ids_queues_and_workers_from_the_server(cluster):
    cluster.start_server()
    for _ in range(12):
        cluster.hq("submit", "--stdout", "none", "--", "true")
    d = cluster.server_dir
    ids = [str(i) for i in range(12, 0, -1)]
    assert complete("hpcqueue job info ", d) == ["last", *ids]
    assert complete("hpcqueue job info 1", d) == ["12", "11", "10", "1"]
    assert complete("hpcqueue job wait ", d) == ["last", *ids, "all"]
    assert complete("hpcqueue task list 7", d) == ["7"]
    cluster.start_worker()
    cluster.hq("job", "wait", "all", timeout=60)
    assert complete("hpcqueue worker stop ", d) == ["1", "all"]
    assert complete("hpcqueue worker info ", d) == ["1"]
    cluster.hq("alloc", "add", "local", "--name", "cpu", "--time-limit", "1m", "--no-dry-run")
    assert complete("hpcqueue alloc pause ", d) == ["1", "cpu"]
    assert complete("hpcqueue alloc info c", d) == ["cpu"]


def test_no_server_completes_quietly(tmp_path):
    assert complete("hpcqueue job info ", tmp_path / "none") == ["last"]
    assert complete("hpcqueue alloc remove ", tmp_path / "none") == []


def test_profile_names(tmp_path):
    got = complete("hpcqueue alloc add slurm --profile example-lumi/", tmp_path / "sd")
    assert got and all(g.startswith("example-lumi/") for g in got)
    assert "example-lumi/small-g" in got
    assert "example-lumi/debug" in complete("hpcqueue config show --profile example-l",
                                            tmp_path / "sd")
    # a broken config file of the user's: the other layers' profiles, no traceback
    (tmp_path / "xdg" / "hpcqueue").mkdir(parents=True)
    (tmp_path / "xdg" / "hpcqueue" / "bad.yaml").write_text("profiles: [\n")
    assert "example-lumi/debug" in complete("hpcqueue alloc add slurm --profile ",
                                            tmp_path / "sd",
                                            env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
