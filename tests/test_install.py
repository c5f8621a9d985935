"""The package as a new user gets it: declared dependencies, a fresh venv, the README.

- every third-party import of the package is a declared dependency (core, or an extra for
  an import made only where that extra is used);
- every module imports with what is installed;
- the README's first set-up command, run as written in a copy of the source tree, makes a
  venv without system site-packages, installs into it and runs its job; `hpcqueue --help`,
  `config profiles` and `alloc dry-run local` then work in that venv, and the installed
  wheel carries the LICENSE;
- CI runs the README's test command, exactly, in a venv without system site-packages.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hpcqueue
from conftest import in_ci

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpcqueue"

#: import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml"}


def _requirement_name(req: str) -> tuple[str, str | None]:
    """("pyyaml", None) for "PyYAML>=5.4"; ("fabric", "ssh") for 'fabric>=3; extra == "ssh"'."""
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")
    extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
    return name, extra.group(1) if extra else None


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core distributions, extra -> distributions) from the installed metadata."""
    core, extras = set(), {}
    for req in importlib.metadata.requires("hpcqueue") or []:
        name, extra = _requirement_name(req)
        if extra is None:
            core.add(name)
        else:
            extras.setdefault(extra, set()).add(name)
    return core, extras


def third_party_imports() -> list[tuple[str, str, bool]]:
    """(module file, top-level import name, imported at module level) for the package."""
    stdlib = set(sys.stdlib_module_names)
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top_level = {id(node) for node in tree.body}
        # an import inside `if TYPE_CHECKING:` or a function body is not at module level
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            for name in names:
                if name in stdlib or name in ("hpcqueue", "__future__"):
                    continue
                out.append((str(path.relative_to(ROOT)), name, id(node) in top_level))
    return out


def test_every_import_is_declared():
    core, extras = declared()
    optional = set().union(*extras.values())
    found = third_party_imports()
    assert {name for _, name, _ in found} >= {"click", "yaml", "msgpack", "cryptography"}
    problems = []
    for where, name, module_level in found:
        dist = DISTRIBUTION.get(name, name).lower()
        if module_level and dist not in core:
            problems.append(f"{where}: `import {name}` at module level, but {dist} is not a "
                            f"core dependency")
        elif dist not in core and dist not in optional:
            problems.append(f"{where}: `import {name}`, but {dist} is not declared at all")
    assert not problems, "\n".join(problems)


def test_extras_are_the_documented_ones():
    _, extras = declared()
    for name in ("ssh", "drmaa", "pyslurm", "slurm", "pbs", "sge", "all", "test"):
        assert name in extras or name in ("slurm", "pbs"), name
    # [all] is everything that installs anywhere: pyslurm builds only for one Slurm release
    assert extras["all"] == (extras["ssh"] | extras["drmaa"])
    # the docs name no extra that does not exist
    metadata = importlib.metadata.metadata("hpcqueue")
    provided = set(metadata.get_all("Provides-Extra") or [])
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for named in re.findall(r"hpcqueue\[([a-z0-9_,-]+)\]", doc.read_text()):
            for extra in named.split(","):
                assert extra in provided, f"{doc.name} names hpcqueue[{extra}]"


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(hpcqueue.__path__, "hpcqueue.")
             if m.name != "hpcqueue.__main__"]
    assert len(names) > 40
    for name in names:
        importlib.import_module(name)


def readme_commands() -> list[str]:
    """The README's two set-up commands, in order (the code lines of its set-up section)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.+?)\n```", section)
    assert len(commands) == 2, commands
    return commands


def test_ci_runs_the_readme_test_command_in_a_clean_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = readme_commands()[1]
    assert test_command in ci.splitlines()
    assert "python3 -m venv" in test_command and "--system-site-packages" not in ci
    if in_ci():
        # this very run: a venv, and one that cannot see the machine's own packages
        assert sys.prefix != sys.base_prefix, "CI must run the tests in a venv"
        cfg = (Path(sys.prefix) / "pyvenv.cfg").read_text()
        assert re.search(r"include-system-site-packages\s*=\s*false", cfg), cfg


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory):
    """A copy of the source tree in which the README's first command has been run."""
    copy = tmp_path_factory.mktemp("fresh") / "hpcqueue"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "build", "__pycache__", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    # `python3` as the user has it: not the venv this test suite runs in
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not p.startswith(sys.prefix))
    p = subprocess.run(["bash", "-c", readme_commands()[0]], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=600)
    return copy, env, p


def test_readme_first_command_runs_its_job(fresh_install):
    copy, _, p = fresh_install
    assert p.returncode == 0, p.stderr[-3000:]
    tasks = len((copy / "examples" / "commands.txt").read_text().splitlines())
    assert f"{tasks} tasks, {tasks} finished" in p.stderr + p.stdout


def _venv_run(copy, env, *args, **kw):
    return subprocess.run([str(copy / ".venv" / "bin" / args[0]), *args[1:]], cwd=copy,
                          env=dict(env, HPCQUEUE_SERVER_DIR=str(copy / "server"),
                                   HOME=str(copy / "home")),
                          capture_output=True, text=True, timeout=120, **kw)


def test_fresh_venv_has_only_what_is_declared(fresh_install):
    copy, env, p = fresh_install
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = (copy / ".venv" / "pyvenv.cfg").read_text()
    assert re.search(r"include-system-site-packages\s*=\s*false", cfg), cfg
    # installed, not linked to the source tree, and with the core dependencies only
    check = _venv_run(copy, env, "python", "-I", "-c", """if 1:
        import importlib, importlib.metadata, pkgutil, sys
        import hpcqueue
        assert "site-packages" in hpcqueue.__file__, hpcqueue.__file__
        for m in pkgutil.walk_packages(hpcqueue.__path__, "hpcqueue."):
            if m.name != "hpcqueue.__main__":
                importlib.import_module(m.name)
        for absent in ("pytest", "fabric", "drmaa"):
            try:
                importlib.import_module(absent)
            except ImportError:
                continue
            sys.exit(absent + " is installed: not a core-only venv")
        files = importlib.metadata.files("hpcqueue")
        assert any(f.name == "LICENSE" for f in files), "no LICENSE in the wheel"
        print("ok")
        """)
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr


@pytest.mark.parametrize("args, expect", [
    (["--help"], "A task queue for HPC clusters"),
    (["config", "profiles"], "generic-slurm"),
    (["alloc", "dry-run", "local", "--time-limit", "10m"], "dry run passed"),
])
def test_fresh_venv_commands(fresh_install, args, expect):
    copy, env, p = fresh_install
    assert p.returncode == 0, p.stderr[-3000:]
    out = _venv_run(copy, env, "hpcqueue", *args)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
