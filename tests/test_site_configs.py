"""The packaged site profiles (site-configs/*.yaml, shipped as hpcqueue/site-configs).

- every shipped file validates and loads;
- every shipped profile renders to its golden script in tests/site_golden/, with its
  QueueParams built by the CLI's own `build_params` (no second copy of that logic);
- a typo is reported with its file, line and the key meant;
- `config show --blame` names the layer of every value;
- every profile passes `alloc dry-run` against the CI schedulers (Slurm for real, PBS
  through Slurm's qsub wrappers, Grid Engine), mapped onto the one-node CI cluster;
- `alloc add slurm --profile generic-slurm --partition debug` runs tasks in partition debug.

Set HPCQUEUE_UPDATE_GOLDEN=1 to rewrite tests/site_golden/ after a deliberate change.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hq, wait_for

from hpcqueue import config
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.autoalloc.schedulers.base import hms
from hpcqueue.autoalloc.schedulers.slurm import Slurm
from hpcqueue.autoalloc.service import write_script
from hpcqueue.config.schema import parse

REPO = Path(__file__).resolve().parent.parent
SITE_CONFIGS = REPO / "site-configs"
GOLDEN = Path(__file__).parent / "site_golden"
SHIPPED = sorted(SITE_CONFIGS.glob("*.yaml"))
#: where the golden scripts pretend the server dir is, and the Python that runs workers
SERVER_DIR = "/srv/hpcq"
PYTHON = "/opt/python/bin/python3"
#: what a profile's `server-address: {interface: ...}` resolves to in the golden scripts
INTERFACE_ADDRESS = "192.0.2.10"  # TEST-NET-1: documentation only
#: read before the `isolated` fixture clears every HPCQUEUE_* variable
UPDATE_GOLDEN = bool(os.environ.get("HPCQUEUE_UPDATE_GOLDEN"))


def _packaged_config() -> config.Config:
    """Only the packaged layer: no /etc/hpcqueue, no ~/.config/hpcqueue, no HPCQUEUE_*."""
    nowhere = str(REPO / "tests" / "no-such-dir")
    return config.load(env={"HPCQUEUE_SYSTEM_CONFIG_DIR": nowhere, "XDG_CONFIG_HOME": nowhere})


PACKAGED = _packaged_config()
PROFILES = sorted(PACKAGED.profiles)


def profile_values(qualified: str) -> dict:
    """key -> plain value of a packaged profile, as its file says."""
    return {k: v.value for k, v in PACKAGED.profiles[qualified].values.items()}


def by_scheduler(name: str) -> list[str]:
    return [p for p in PROFILES if profile_values(p)["scheduler"] == name]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Neither the machine's /etc/hpcqueue nor ~/.config/hpcqueue nor HPCQUEUE_* variables
    leak in: every layer above the packaged one is a temporary dir (empty until a test
    writes to it); subprocesses inherit this environment."""
    for name in list(os.environ):
        if name.startswith("HPCQUEUE_"):
            monkeypatch.delenv(name)
    layers = {"system": tmp_path / "etc-hpcqueue", "xdg": tmp_path / "xdg"}
    monkeypatch.setenv("HPCQUEUE_SYSTEM_CONFIG_DIR", str(layers["system"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(layers["xdg"]))
    return layers


# ----------------------------------------------------------------- (a) they validate

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_file_validates(path):
    data, lines, problems = parse(str(path))
    assert problems == []
    # the site is named after the file, so `--profile FILE-STEM` finds its default
    assert data["site"] == path.stem
    assert data.get("description")
    assert "default" in data["profiles"]
    # packaged files must not choose the active site or default profile for everybody
    assert data["settings"] == {} and ("settings",) not in lines
    for name, values in data["profiles"].items():
        assert {"description", "scheduler", "time-limit"} <= set(values), name
        if "template" in values:
            template = (path.parent / values["template"]).resolve()
            assert template.is_file() and template.parent == SITE_CONFIGS / "templates", name


def test_config_validate_accepts_every_shipped_file():
    p = hq("config", "validate", *SHIPPED)
    assert p.stdout.splitlines() == [f"{path}: ok" for path in SHIPPED]
    assert p.stderr == ""


def test_load_has_no_problems_and_finds_every_profile():
    cfg = config.load()  # the isolated environment: packaged layer only
    assert cfg.problems == []
    cfg.check()
    assert [path.name for layer, path in cfg.files] == [p.name for p in SHIPPED]
    assert {layer for layer, _ in cfg.files} == {"packaged"}
    assert sorted(cfg.profiles) == PROFILES
    for path in SHIPPED:
        # a bare site name means its default profile
        assert cfg.resolve(path.stem).qualified == f"{path.stem}/default"
    listed = json.loads(hq("config", "profiles", "--output", "json").stdout)
    assert [row["profile"] for row in listed] == PROFILES
    assert all(row["description"] and row["scheduler"] for row in listed)


def test_packaging_ships_the_site_configs(tmp_path):
    """A built wheel carries site-configs/*.yaml and their templates (hpcqueue/site-configs
    is a symlink; setuptools copies only what package-data names)."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel, = tmp_path.glob("hpcqueue-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [f"hpcqueue/site-configs/{p.name}" for p in SHIPPED] + [
        f"hpcqueue/site-configs/templates/{p.name}"
        for p in (SITE_CONFIGS / "templates").iterdir()]
    assert [f for f in shipped if f not in names] == []
    assert "hpcqueue/templates/slurm.sh.j2" in names


# ----------------------------------------------------------------- (b) golden scripts

def build(argv: list[str]) -> QueueParams:
    """QueueParams exactly as `hpcqueue alloc dry-run ARGV` builds them: the CLI's own
    parser and `build_params` (profile -> HPCQUEUE_* -> flags), without the submission."""
    from hpcqueue.cli.alloc import build_params, dry_run_cmd

    with dry_run_cmd.make_context("dry-run", list(argv)) as ctx:
        return build_params(ctx, ctx.params)


def golden_script(qualified: str, tmp_path: Path) -> str:
    """The script of allocation 1.1 of a queue made from the profile, as the server writes
    it (service.write_script), with the server dir shown as SERVER_DIR."""
    params = build([profile_values(qualified)["scheduler"], "--profile", qualified])
    assert params.profile == qualified
    server_dir = tmp_path / "server"
    script = write_script(params, 1, "1.1", server_dir / "autoalloc" / "1" / "1", server_dir)
    return script.read_text().replace(str(server_dir), SERVER_DIR)


@pytest.fixture
def stable(monkeypatch):
    """The same script on every machine: a fixed Python path, and a fixed address for
    `server-address: {interface: ...}` (the real lookup runs in the dry-run tests)."""
    import hpcqueue.autoalloc.params as params_module

    monkeypatch.setattr(sys, "executable", PYTHON)
    asked = []

    def interface_address(name):
        asked.append(name)
        return INTERFACE_ADDRESS

    monkeypatch.setattr(params_module, "interface_address", interface_address)
    return asked


def golden_path(qualified: str) -> Path:
    return GOLDEN / (qualified.replace("/", ".") + ".sh")


@pytest.mark.parametrize("qualified", PROFILES)
def test_profile_renders_to_its_golden_script(qualified, stable, tmp_path):
    text = golden_script(qualified, tmp_path)
    path = golden_path(qualified)
    if UPDATE_GOLDEN:
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs: HPCQUEUE_UPDATE_GOLDEN=1 if meant"
    check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr

    # what every script must do, whatever its template (the packaged parts are included)
    v = profile_values(qualified)
    assert text.startswith("#!/bin/bash\n")
    assert "export HPCQUEUE_ALLOC_ID=1.1\n" in text
    assert f"export HPCQUEUE_SERVER_DIR={SERVER_DIR}\n" in text
    assert f"+ {int(v['time-limit'])} ))" in text
    worker = f"{PYTHON} -m hpcqueue worker start --on-server-lost reconnect " \
             f"--idle-timeout {v.get('idle-timeout', 300.0):g}s"
    assert worker in text
    # the worker offers what the profile asked the scheduler for, no more
    if "cpus" in v:
        assert f" --cpus {v['cpus']}" in text
    else:
        assert " --cpus " not in text
    if v.get("gpus"):
        assert f" --resource gpus={v['gpus']}" in text
    else:
        assert " --resource " not in text
    for module in v.get("modules", []):
        assert f"module load {module}\n" in text
    for key, value in v.get("env", {}).items():
        assert f"export {key}={value}\n" in text
    if "server-address" in v:
        assert stable == [v["server-address"]["interface"]]
        assert f"--server-host {INTERFACE_ADDRESS}" in text
    assert text.rstrip().endswith("exit $status")


def test_no_stale_golden_files():
    assert sorted(GOLDEN.glob("*.sh")) == sorted(golden_path(p) for p in PROFILES)


def test_template_override_reaches_the_script(stable, tmp_path):
    """example-derecho's profiles render with its override, which includes the packaged
    prologue and epilogue and starts multi-node workers with mpiexec, not pbsdsh."""
    one = golden_script("example-derecho/default", tmp_path)
    many = golden_script("example-derecho/multi-node", tmp_path)
    for text in (one, many):
        assert "#PBS -r n\n" in text and 'export TMPDIR="/glade/derecho/scratch/$USER/tmp"' \
            in text
        assert "# allocation 1.1 of queue 1, made by hpcqueue" in text  # common prologue
    assert "#PBS -l select=1:ncpus=128:mpiprocs=1:ompthreads=1\n" in one
    assert "mpiexec -n 4 --ppn 1 /bin/bash -c" in many and "pbsdsh" not in many
    # the packaged PBS template, for comparison, uses pbsdsh for the same parameters
    generic = golden_script("generic-pbs/multi-node", tmp_path)
    assert "pbsdsh" in generic and "mpiexec" not in generic


def test_flags_and_environment_override_a_profile(stable, monkeypatch):
    monkeypatch.setenv("HPCQUEUE_ACCOUNT", "m9999")
    monkeypatch.setenv("HPCQUEUE_MODULES", "python/3.11 gcc")
    params = build(["slurm", "--profile", "example-perlmutter", "--time-limit", "1h",
                    "--cpus", "64"])
    assert (params.account, params.modules) == ("m9999", ["python/3.11", "gcc"])  # env
    assert (params.time_limit, params.cpus) == (3600.0, 64)                        # flags
    assert (params.qos, params.extra_args) == ("regular", ["--constraint=cpu"])    # profile
    assert params.server_host == INTERFACE_ADDRESS
    # extra arguments after `--` replace the profile's, they do not add to them
    params = build(["slurm", "--profile", "example-perlmutter", "--", "--exclusive"])
    assert params.extra_args == ["--exclusive"]


def test_profile_for_another_scheduler_is_refused(stable):
    from hpcqueue.exceptions import UsageError

    with pytest.raises(UsageError, match="is for pbs, not slurm"):
        build(["slurm", "--profile", "example-derecho"])


# ----------------------------------------------------------------- (c) a typo

def test_typo_fails_validate_with_line_and_suggestion(tmp_path, isolated):
    shipped = SITE_CONFIGS / "generic-slurm.yaml"
    lines = shipped.read_text().splitlines(keepends=True)
    line = next(i for i, text in enumerate(lines, 1) if text.strip() == "partition: gpu")
    lines[line - 1] = lines[line - 1].replace("partition:", "partiton:")
    bad = tmp_path / "site.yaml"
    bad.write_text("".join(lines))

    p = hq("config", "validate", bad, SITE_CONFIGS / "local.yaml", check=False)
    assert p.returncode == 1
    assert p.stderr == (f"{bad}:{line}: profiles.gpu.partiton: unknown key; "
                        "did you mean 'partition'?\n")
    assert p.stdout == f"{SITE_CONFIGS / 'local.yaml'}: ok\n"  # the good file still passes

    # the same file in the user layer stops every command that loads the config
    (isolated["xdg"] / "hpcqueue").mkdir(parents=True)
    (isolated["xdg"] / "hpcqueue" / "site.yaml").write_text(bad.read_text())
    p = hq("config", "profiles", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert f"site.yaml:{line}: profiles.gpu.partiton: unknown key; did you mean 'partition'?" \
        in p.stderr
    assert "hpcqueue config validate" in p.stderr


# ----------------------------------------------------------------- (d) layers and blame

def show(*args) -> dict:
    rows = json.loads(hq("config", "show", "--blame", "--output", "json", *args).stdout)
    return {r["key"]: (r["value"], r["source"]) for r in rows}


def line_of(path: Path, profile: str, key: str) -> int:
    return parse(str(path))[1][("profiles", profile, key)]


def test_blame_names_the_packaged_file_and_line():
    shipped = config.PACKAGED / "generic-slurm.yaml"
    rows = show("--profile", "generic-slurm")
    assert rows["profile"] == ("generic-slurm/default", "--profile")
    keys = set(profile_values("generic-slurm/default")) - {"description"}
    assert keys == {k for k in rows if k not in ("profile",) and not k.startswith("settings.")}
    for key in keys:
        value, source = rows[key]
        assert source == f"packaged {shipped}:{line_of(shipped, 'default', key)}", key
        # the blamed line really is where the key is set
        assert shipped.read_text().splitlines()[int(source.rsplit(":", 1)[1]) - 1] \
            .strip().startswith(f"{key}:")
    assert rows["time-limit"][0] == 1800.0
    # the table has the FROM column only with --blame
    blamed = hq("config", "show", "--profile", "generic-slurm", "--blame").stdout
    plain = hq("config", "show", "--profile", "generic-slurm").stdout
    assert "FROM" in blamed.splitlines()[0] and "FROM" not in plain.splitlines()[0]


def test_every_layer_is_blamed_and_later_layers_win(isolated, monkeypatch):
    """packaged -> system (HPCQUEUE_SYSTEM_CONFIG_DIR) -> user (XDG_CONFIG_HOME) ->
    HPCQUEUE_* variables; `config show` has no flags of its own, so the command-line layer
    is checked through build_params (test_flags_and_environment_override_a_profile) and
    the real `alloc add` (test_generic_slurm_profile_runs_tasks_in_partition_debug)."""
    system = isolated["system"] / "cluster.yaml"
    system.parent.mkdir(parents=True)
    system.write_text("site: generic-slurm\n"
                      "profiles:\n"
                      "  default:\n"
                      "    partition: cpu\n"
                      "    account: physics\n"
                      "    time-limit: 20m\n")
    user = isolated["xdg"] / "hpcqueue" / "mine.yml"
    user.parent.mkdir(parents=True)
    user.write_text("site: generic-slurm\n"
                    "profiles:\n"
                    "  default:\n"
                    "    time-limit: 10m\n"
                    "    max-worker-count: 2\n")
    packaged = config.PACKAGED / "generic-slurm.yaml"

    rows = show("--profile", "generic-slurm")
    assert rows["backlog"] == (1, f"packaged {packaged}:{line_of(packaged, 'default', 'backlog')}")
    assert rows["partition"] == ("cpu", f"system {system}:4")
    assert rows["account"] == ("physics", f"system {system}:5")
    assert rows["time-limit"] == (600.0, f"user {user}:4")          # user beats system
    assert rows["max-worker-count"] == (2, f"user {user}:5")        # user beats packaged

    monkeypatch.setenv("HPCQUEUE_PARTITION", "debug")
    monkeypatch.setenv("HPCQUEUE_TIME_LIMIT", "15m")
    rows = show("--profile", "generic-slurm")
    assert rows["partition"] == ("debug", "environment HPCQUEUE_PARTITION")
    assert rows["time-limit"] == (900.0, "environment HPCQUEUE_TIME_LIMIT")
    assert rows["account"] == ("physics", f"system {system}:5")

    # and the queue gets exactly these values, flags on top
    params = build(["slurm", "--profile", "generic-slurm", "--account", "chem"])
    assert (params.partition, params.time_limit, params.max_worker_count, params.account) \
        == ("debug", 900.0, 2, "chem")


def test_active_site_resolves_plain_profile_names(isolated, monkeypatch):
    p = hq("config", "show", "--profile", "gpu", check=False)
    assert p.returncode != 0
    assert "profile 'gpu' exists in several sites" in p.stderr
    assert "example-perlmutter/gpu" in p.stderr and "generic-slurm/gpu" in p.stderr

    user = isolated["xdg"] / "hpcqueue" / "settings.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("settings:\n  site: example-perlmutter\n  profile: debug\n")
    rows = show("--profile", "gpu")
    assert rows["settings.site"] == ("example-perlmutter", f"user {user}:2")
    assert rows["profile"] == ("example-perlmutter/gpu", "--profile")
    assert rows["gpus"][0] == 4
    rows = show()  # no --profile: the settings' default profile, blamed on its file
    assert rows["profile"] == ("example-perlmutter/debug", f"user {user}:3")
    monkeypatch.setenv("HPCQUEUE_SITE", "example-lumi")
    rows = show()
    assert rows["settings.site"] == ("example-lumi", "environment HPCQUEUE_SITE")
    assert rows["profile"][0] == "example-lumi/debug"


# ----------------------------------------------------------------- (e) dry runs for real

@pytest.fixture(scope="module")
def ci_node(slurm):
    """CPUs and memory (MB) of a node of the CI cluster's `cpu` partition (which `debug`
    shares), and how many nodes it has (the multi-node partition `multi` has other nodes)."""
    out = subprocess.run(["sinfo", "--noheader", "--partition=cpu", "--format=%c %m %D"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {"cpus": int(out[0]), "mem_mb": int(out[1].rstrip("+")), "nodes": int(out[2])}


#: A shipped profile's partition (Perlmutter: its QOS; PBS: its queue) -> the CI
#: partition that stands in for it.  The CI cluster has `debug` (MaxTime 30 min, like
#: the debug partitions and QOSes of real sites: a profile asking for more must fail
#: there, as it would on the real machine) and `cpu` (no time limit) for everything
#: else.  A new profile with a new partition must be added here on purpose.
CI_PARTITION = {
    "debug": "debug",                                         # LUMI, Perlmutter (QOS)
    None: "cpu", "gpu": "cpu",                                # generic-slurm
    "regular": "cpu", "shared": "cpu",                        # Perlmutter QOSes
    "small": "cpu", "standard": "cpu", "small-g": "cpu", "standard-g": "cpu",  # LUMI
    "main": "cpu", "develop": "cpu",                          # Derecho (PBS queues)
}


def _mb(mem: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)B?", mem, re.I).groups()
    return int(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[unit.upper()]


def ci_mapping(v: dict, node: dict) -> tuple[list[str], dict, dict]:
    """(flags, environment, what changed) that put a profile onto the one-node CI cluster.

    Only what the CI cluster cannot provide is mapped, everything else (account, QOS,
    time limit, modules, env, the rest of the directives) goes to the scheduler as the
    profile says it.  The CI Slurm has no accounting, so it accepts (and ignores) any
    --account and --qos string: checked with sbatch, QOS=(null) in `scontrol show job`."""
    flags = ["--partition", CI_PARTITION[v.get("partition") or v.get("qos")]]
    env, mapped = {}, {}
    if v.get("cpus", 0) > node["cpus"]:          # e.g. 128-core nodes -> the CI's 8 CPUs
        flags += ["--cpus", str(node["cpus"])]
        mapped["cpus"] = node["cpus"]
    if v.get("gpus"):                            # no GRES on the CI cluster
        flags += ["--gpus", "0"]
        mapped["gpus"] = 0
    if "mem" in v and _mb(v["mem"]) > node["mem_mb"]:
        flags += ["--mem", f"{node['mem_mb']}M"]
        mapped["mem"] = f"{node['mem_mb']}M"
    if v.get("workers-per-alloc", 1) > node["nodes"]:  # one node: one worker per allocation
        flags += ["--workers-per-alloc", str(node["nodes"])]
        mapped["workers-per-alloc"] = node["nodes"]
    # The CI nodes have no features, so sbatch rejects --constraint ("Invalid feature
    # specification").  Arguments after `--` replace the profile's extra-args (and an
    # empty list cannot be given), so each constraint becomes a --comment naming it:
    # the same number of directive lines, each still checked by sbatch.
    extra = [re.sub(r"^--constraint=", "--comment=constraint=", a)
             for a in v.get("extra-args", [])]
    if extra != v.get("extra-args", []):
        flags += ["--", *extra]
        mapped["extra-args"] = extra
    # No interface hsn0 here: the environment layer points server-address at the
    # loopback interface, whose address the real lookup finds.
    if "interface" in v.get("server-address", {}):
        env["HPCQUEUE_SERVER_ADDRESS"] = "interface:lo"
        mapped["server-address"] = "127.0.0.1"
    return flags, env, mapped


def dry_run(qualified: str, tmp_path: Path, flags=(), env=None) -> str:
    """`hpcqueue alloc dry-run SCHEDULER --profile QUALIFIED FLAGS`: the script printed."""
    p = hq("alloc", "dry-run", profile_values(qualified)["scheduler"], "--profile", qualified,
           *flags, server_dir=tmp_path / "server", env=env, check=False, timeout=120)
    assert p.returncode == 0, f"{qualified} {' '.join(flags)} {env or ''}:\n{p.stderr}"
    assert "dry run passed: the scheduler accepted the script" in p.stderr
    return p.stdout


@pytest.mark.parametrize("qualified", by_scheduler("slurm"))
def test_slurm_profile_passes_a_dry_run_on_the_ci_slurm(qualified, slurm, ci_node, tmp_path):
    v = profile_values(qualified)
    flags, env, mapped = ci_mapping(v, ci_node)
    script = dry_run(qualified, tmp_path, flags, env)
    lines = script.splitlines()
    assert f"#SBATCH --partition={flags[1]}" in lines
    assert f"#SBATCH --time={Slurm().time(v['time-limit'])}" in lines
    for key in ("account", "qos"):  # as the profile says: the CI Slurm accepts any
        assert (f"#SBATCH --{key}={v.get(key)}" in lines) == (key in v)
    if "cpus" in v:
        assert f"#SBATCH --cpus-per-task={mapped.get('cpus', v['cpus'])}" in lines
    assert not any(line.startswith("#SBATCH --gpus") for line in lines)
    if "mem" in v:
        assert f"#SBATCH --mem={mapped.get('mem', v['mem'])}" in lines
    assert f"#SBATCH --nodes={mapped.get('workers-per-alloc', v['workers-per-alloc'])}" in lines
    for arg in mapped.get("extra-args", v.get("extra-args", [])):
        assert f"#SBATCH {arg}" in lines
    for module in v.get("modules", []):
        assert f"module load {module}" in lines
    if "server-address" in v:
        assert "--server-host 127.0.0.1" in script


@pytest.mark.parametrize("qualified", by_scheduler("pbs"))
def test_pbs_profile_passes_a_dry_run_through_the_qsub_wrappers(qualified, pbs_wrappers,
                                                                 ci_node, tmp_path):
    """Slurm's qsub wrapper has sbatch read the #PBS lines: the queue (as the partition),
    the walltime and the CPUs of the select chunk are checked against the CI cluster."""
    v = profile_values(qualified)
    flags, env, mapped = ci_mapping(v, ci_node)
    script = dry_run(qualified, tmp_path, flags, {**pbs_wrappers, **env})
    lines = script.splitlines()
    assert f"#PBS -q {flags[1]}" in lines
    assert f"#PBS -l walltime={hms(v['time-limit'])}" in lines
    assert "account" not in v or f"#PBS -A {v['account']}" in lines
    select = next(line for line in lines if line.startswith("#PBS -l select="))
    assert select.startswith(f"#PBS -l select=1:ncpus={mapped.get('cpus', v['cpus'])}")
    for arg in v.get("extra-args", []):
        assert f"#PBS {arg}" in lines


@pytest.mark.parametrize("qualified", by_scheduler("sge"))
def test_sge_profile_passes_a_dry_run_on_the_ci_grid_engine(qualified, sge, tmp_path):
    """As the profile is: the CI Grid Engine has the parallel environment smp."""
    v = profile_values(qualified)
    script = dry_run(qualified, tmp_path, env=sge)
    assert f"#$ -pe smp {v['cpus']}" in script.splitlines()
    assert f"#$ -l h_rt={hms(v['time-limit'])}" in script.splitlines()


@pytest.mark.parametrize("qualified", by_scheduler("local"))
def test_local_profile_passes_a_dry_run(qualified, tmp_path):
    v = profile_values(qualified)
    script = dry_run(qualified, tmp_path)
    assert script.count(" worker start ") == v["workers-per-alloc"]


def test_every_ci_mapping_is_named():
    for qualified in by_scheduler("slurm") + by_scheduler("pbs"):
        v = profile_values(qualified)
        assert (v.get("partition") or v.get("qos")) in CI_PARTITION, qualified


# ----------------------------------------------------------------- (f) end to end

def scontrol_job(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


@pytest.fixture
def slurm_cluster(cluster, slurm):
    yield cluster
    try:
        queues = json.loads(cluster.hq("alloc", "list", "--output", "json", check=False).stdout
                            or "[]")
        ids = [a["job_id"] for q in queues for a in json.loads(
            cluster.hq("alloc", "info", str(q["id"]), "--output", "json").stdout)["allocations"]
            if a["job_id"]]
    except (ValueError, AssertionError):
        ids = []
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_generic_slurm_profile_runs_tasks_in_partition_debug(slurm_cluster, tmp_path):
    c = slurm_cluster
    c.start_server()
    # the profile gives everything but the partition; --idle-timeout 5s only lets the
    # allocation end soon after the tasks instead of the profile's 5 minutes
    p = c.hq("alloc", "add", "slurm", "--profile", "generic-slurm", "--partition", "debug",
             "--idle-timeout", "5s", timeout=180)
    assert "dry run passed" in p.stdout
    info = json.loads(c.hq("alloc", "info", "1", "--output", "json").stdout)
    params = info["params"]
    assert params["profile"] == "generic-slurm/default"
    assert (params["partition"], params["idle_timeout"]) == ("debug", 5.0)      # flags
    assert (params["time_limit"], params["max_worker_count"]) == (1800.0, 4)    # profile

    out = tmp_path / "out"
    out.mkdir()
    c.hq("submit", "--array", "1-6", "--stdout", "none", "--", "sh", "-c",
         f'echo "$SLURM_JOB_PARTITION $SLURM_JOB_ID" > {out}/$HPCQUEUE_TASK_ID')
    assert "6 finished" in c.hq("job", "wait", "1-1000000", timeout=180).stdout

    allocs = json.loads(c.hq("alloc", "info", "1", "--output", "json").stdout)["allocations"]
    job_ids = {a["job_id"] for a in allocs}
    ran = [(out / str(i)).read_text().split() for i in range(1, 7)]
    assert {partition for partition, _ in ran} == {"debug"}     # each task, inside its job
    assert {job for _, job in ran} <= job_ids
    for job_id in job_ids:                                      # and Slurm agrees
        job = scontrol_job(job_id)
        assert job["Partition"] == "debug" and job["TimeLimit"] == "00:30:00", job
    script = c.hq("alloc", "log", "1.1", "script").stdout
    assert "#SBATCH --partition=debug" in script.splitlines()
    assert "#SBATCH --time=00:30:00" in script.splitlines()
    wait_for(lambda: {a["state"] for a in json.loads(
        c.hq("alloc", "info", "1", "--output", "json").stdout)["allocations"]} == {"finished"},
        timeout=90, what="the allocations to end")
