"""Layered configuration: resolution, precedence and blame (shipped files: test_site_configs)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import hq

from hpcqueue import config
from hpcqueue.exceptions import UsageError

SITE = """\
site: campus
settings:
  profile: cpu
profiles:
  cpu:
    scheduler: slurm
    partition: compute
    time-limit: 2h
    modules: [python/3.11]
  gpu:
    scheduler: slurm
    partition: gpu
    gpus: 4
    time-limit: 1h
    template: tpl/gpu.sh.j2
"""


@pytest.fixture
def layers(tmp_path, monkeypatch):
    # in this process only the layers made here count (the shipped ones: test_site_configs)
    monkeypatch.setattr(config, "PACKAGED", tmp_path / "no-packaged-configs")
    system = tmp_path / "etc"
    user = tmp_path / "xdg" / "hpcqueue"
    system.mkdir()
    user.mkdir(parents=True)
    (system / "campus.yaml").write_text(SITE)
    env = {"HPCQUEUE_SYSTEM_CONFIG_DIR": str(system), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
           "HOME": str(tmp_path)}
    return env, system, user


def test_later_layers_win_and_are_blamed(layers):
    env, system, user = layers
    (user / "mine.yaml").write_text("site: campus\nprofiles:\n  cpu:\n    partition: short\n")
    cfg = config.load(env)
    prof = cfg.resolve("cpu")
    values = cfg.effective(prof)
    assert values["partition"].value == "short"
    assert values["partition"].source.startswith("user ") and "mine.yaml:4" in \
        values["partition"].source
    assert values["time-limit"].value == 7200 and "system " in values["time-limit"].source
    assert "campus.yaml:8" in values["time-limit"].source
    values = config.load({**env, "HPCQUEUE_PARTITION": "debug"}).effective(prof)
    assert values["partition"].value == "debug"
    assert values["partition"].source == "environment HPCQUEUE_PARTITION"
    values = cfg.effective(prof, {"partition": "flagged"})
    assert values["partition"].source == "command line"


def test_resolution_of_names(layers):
    env, system, user = layers
    (user / "other.yaml").write_text(
        "site: elsewhere\nprofiles:\n  cpu:\n    scheduler: pbs\n    time-limit: 1h\n")
    cfg = config.load(env)
    assert cfg.resolve("campus/gpu").qualified == "campus/gpu"
    assert cfg.resolve("gpu").qualified == "campus/gpu"  # unique
    with pytest.raises(UsageError, match="several sites"):
        cfg.resolve("cpu")
    cfg = config.load({**env, "HPCQUEUE_SITE": "elsewhere"})
    assert cfg.resolve("cpu").qualified == "elsewhere/cpu"
    assert cfg.resolve("elsewhere").qualified == "elsewhere/cpu"  # a site's only profile
    with pytest.raises(UsageError, match="no profile 'nope'"):
        cfg.resolve("nope")


def test_template_is_relative_to_its_file(layers):
    env, system, _ = layers
    cfg = config.load(env)
    assert cfg.resolve("gpu").values["template"].value == str(system / "tpl" / "gpu.sh.j2")


def test_a_broken_file_is_an_error_naming_it(layers):
    env, _, user = layers
    (user / "bad.yaml").write_text("profiles:\n  x:\n    partiton: cpu\n")
    with pytest.raises(config.ConfigError) as e:
        config.load(env).check()
    assert "bad.yaml:3" in str(e.value) and "did you mean 'partition'" in str(e.value)


def test_bad_environment_value(layers):
    env, _, _ = layers
    cfg = config.load({**env, "HPCQUEUE_BACKLOG": "many"})
    with pytest.raises(UsageError, match="HPCQUEUE_BACKLOG"):
        cfg.effective(cfg.resolve("gpu"))


def test_alloc_with_a_profile_refuses_bad_flags_and_another_scheduler(layers, tmp_path):
    env, _, _ = layers
    p = hq("alloc", "dry-run", "slurm", "--profile", "campus/gpu", "--partition", "cpu",
           "--no-such-flag", server_dir=tmp_path / "sd", env=env, check=False)
    assert p.returncode == 2 and "--no-such-flag" in p.stderr
    p = hq("alloc", "dry-run", "pbs", "--profile", "campus/gpu", server_dir=tmp_path / "sd",
           env=env, check=False)
    assert p.returncode == 2 and "is for slurm, not pbs" in p.stderr


def test_profile_values_are_frozen_into_the_queue(cluster, layers):
    env, system, _ = layers
    (system / "tpl").mkdir()
    tpl = system / "tpl" / "gpu.sh.j2"
    tpl.write_text("#!/bin/bash\n# first version {{ partition }}\n{{ worker_cmd }}\n")
    cluster.start_server(env=env)
    (system / "here.yaml").write_text(
        "profiles:\n  box:\n    scheduler: local\n    time-limit: 10m\n    idle-timeout: 2s\n"
        "    template: tpl/gpu.sh.j2\n")
    cluster.hq("alloc", "add", "local", "--profile", "here/box", env=env)
    tpl.write_text("#!/bin/bash\n# edited later\nexit 1\n")
    cluster.hq("submit", "--stdout", "none", "--", "true")
    assert "1 finished" in cluster.hq("job", "wait", "1-1000000", timeout=60).stdout
    script = cluster.hq("alloc", "log", "1.1", "script").stdout
    assert "first version" in script and "edited later" not in script
    q = json.loads(cluster.hq("alloc", "info", "1", "--output", "json").stdout)
    assert q["params"]["profile"] == "here/box" and q["params"]["idle_timeout"] == 2


def test_server_host_reaches_the_worker_command(monkeypatch):
    from hpcqueue.autoalloc.model import QueueParams
    from hpcqueue.autoalloc.schedulers.base import worker_command
    from hpcqueue.autoalloc.params import interface_address

    monkeypatch.setattr(sys, "executable", "/py")
    cmd = worker_command(QueueParams(scheduler="slurm", time_limit=60, server_host="10.1.2.3"))
    assert cmd.endswith("--server-host 10.1.2.3")
    assert interface_address("lo") == "127.0.0.1"
    with pytest.raises(UsageError, match="no interface"):
        interface_address("nosuch0")


def test_config_defaults_is_a_valid_file(tmp_path):
    path = tmp_path / "defaults.yaml"
    hq("config", "defaults", path)
    assert "wrote" not in hq("config", "validate", path).stderr
    text = path.read_text()
    for key in ("partition", "time-limit", "server-address", "template", "modules"):
        assert key in text
    p = hq("config", "defaults", path, check=False)
    assert p.returncode == 2 and "--force" in p.stderr
    assert os.path.getsize(path) == len(text)


def test_config_defaults_names_every_profile_key():
    from hpcqueue.cli.config import DEFAULTS
    from hpcqueue.config.schema import PROFILE_KEYS

    for key in PROFILE_KEYS:
        assert f"{key}:" in DEFAULTS, key


def test_pause_after_and_keep_dirs_come_from_a_profile_and_the_environment(layers, tmp_path):
    env, _, user = layers
    (user / "mine.yaml").write_text("site: campus\nprofiles:\n  cpu:\n    pause-after: 7\n"
                                    "    keep-dirs: 0\n")
    cfg = config.load(env)
    values = cfg.effective(cfg.resolve("cpu"))
    assert values["pause-after"].value == 7 and "mine.yaml:4" in values["pause-after"].source
    assert config.queue_fields(values)["keep_dirs"] == 0
    cfg = config.load({**env, "HPCQUEUE_PAUSE_AFTER": "5"})
    assert cfg.effective(cfg.resolve("cpu"))["pause-after"].value == 5
    p = hq("config", "validate", user / "mine.yaml", check=False)
    assert p.returncode == 0, p.stderr
    (user / "bad.yaml").write_text("profiles:\n  x:\n    pause-after: 0\n")
    p = hq("config", "validate", user / "bad.yaml", check=False)
    assert p.returncode == 1 and "bad.yaml:3: profiles.x.pause-after: must be at least 1" \
        in p.stderr


def test_flags_beat_a_profile_and_defaults_come_from_the_option_table(layers, tmp_path):
    """`alloc dry-run` builds its parameters as `alloc add` does: a profile's pause-after
    and keep-dirs, overridden by flags; the rest from the table's defaults."""
    from hpcqueue.autoalloc import options
    from hpcqueue.autoalloc.model import QueueParams
    from hpcqueue.cli.alloc import build_params, dry_run_cmd

    env, system, _ = layers
    (system / "more.yaml").write_text("site: campus\nprofiles:\n  cpu:\n    pause-after: 7\n"
                                      "    keep-dirs: 2\n")
    with mock_env(env):
        with dry_run_cmd.make_context("dry-run", ["slurm", "--profile", "cpu",
                                                  "--keep-dirs", "9"]) as ctx:
            params = build_params(ctx, ctx.params)
    (tmp_path / "empty").mkdir()
    with mock_env({**env, "HPCQUEUE_SYSTEM_CONFIG_DIR": str(tmp_path / "empty"),
                   "XDG_CONFIG_HOME": str(tmp_path / "empty")}):
        with dry_run_cmd.make_context("dry-run", ["local", "--time-limit", "1h"]) as ctx:
            plain = build_params(ctx, ctx.params)
    assert (params.pause_after, params.keep_dirs, params.time_limit) == (7, 9, 7200)
    for o in options.OPTIONS:
        if o.default is not None:
            assert getattr(plain, o.field) == o.default, o.field
            assert QueueParams.__dataclass_fields__[o.field].default == o.default, o.field
    assert plain.idle_timeout == 300.0 and plain.pause_after == options.DEFAULT_PAUSE_AFTER


def mock_env(env):
    from unittest import mock

    return mock.patch.dict(os.environ, env)


def test_settings_server_dir_is_the_default_below_the_flag_and_the_environment(layers,
                                                                               tmp_path):
    """settings.server-dir (relative to its file) < $HPCQUEUE_SERVER_DIR < --server-dir,
    for every command and for `config show --blame`."""
    env, system, user = layers
    (user / "where.yaml").write_text("settings:\n  server-dir: ../../from-file\n")
    base = {k: v for k, v in os.environ.items() if k != "HPCQUEUE_SERVER_DIR"}
    run_env = {**base, **env}

    def info(*args, **extra):
        p = subprocess.run([sys.executable, "-m", "hpcqueue", "server", "info", *args],
                           capture_output=True, text=True, env={**run_env, **extra})
        return p

    p = info()  # no server there: the error names the dir it looked in
    assert str(tmp_path / "from-file") in p.stderr and p.returncode != 0, p.stderr
    p = info(HPCQUEUE_SERVER_DIR=str(tmp_path / "from-env"))
    assert str(tmp_path / "from-env") in p.stderr and "from-file" not in p.stderr
    p = info("--server-dir", str(tmp_path / "from-flag"),
             HPCQUEUE_SERVER_DIR=str(tmp_path / "from-env"))
    assert str(tmp_path / "from-flag") in p.stderr and "from-env" not in p.stderr
    show = subprocess.run([sys.executable, "-m", "hpcqueue", "config", "show", "--blame",
                           "--output", "json"], capture_output=True, text=True, env=run_env)
    row = next(r for r in json.loads(show.stdout) if r["key"] == "settings.server-dir")
    assert row["value"] == str(tmp_path / "from-file") and "where.yaml:2" in row["source"]
    assert config.server_dir_setting(env).value == str(tmp_path / "from-file")
    # a wrong server-dir is an error naming the file, not another server dir
    (user / "where.yaml").write_text("settings:\n  server-dir: [a, b]\n")
    p = info()
    assert p.returncode != 0 and "where.yaml:2: settings.server-dir: must be a string" \
        in p.stderr and "Traceback" not in p.stderr
    # a problem elsewhere in the file is left to the commands that read profiles
    (user / "where.yaml").write_text("settings:\n  server-dir: /x/y\nprofiles:\n  a:\n"
                                     "    partiton: cpu\n")
    assert config.server_dir_setting(env).value == "/x/y"
