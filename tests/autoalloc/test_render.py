"""Job scripts: golden files for each packaged template, and clear template errors.

Set HPCQUEUE_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hq, one_clear_line

from hpcqueue.autoalloc import backends
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.autoalloc.render import render
from hpcqueue.exceptions import TemplateError, UsageError

GOLDEN = Path(__file__).parent / "golden"
PYTHON = sys.executable  # the real one, for commands run by a test


@pytest.fixture(autouse=True)
def stable_python(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/opt/python/bin/python3")


def script(scheduler, tmp_path=Path("/srv/hpcq"), **kw):
    params = QueueParams(scheduler=scheduler, time_limit=kw.pop("time_limit", 3600), **kw)
    params.validate()
    sched = backends.scheduler(scheduler)
    ctx = sched.context(params, 3, "3.7", tmp_path / "autoalloc/3/7", tmp_path)
    return render(sched.template, ctx, params.template)


CASES = {
    "slurm-minimal": ("slurm", {}),
    "slurm-full": ("slurm", dict(
        partition="gpu", account="proj-42", qos="normal", cpus=16, gpus=2, mem="64G",
        workers_per_alloc=4, idle_timeout=120, time_limit=90000,
        worker_start_cmd="source /etc/profile.d/site.sh", worker_stop_cmd="echo done",
        extra_args=["--constraint=a100", "--exclusive"], env={"OMP_NUM_THREADS": "1 2"},
        modules=["python/3.11"])),
    "pbs-minimal": ("pbs", {}),
    "pbs-full": ("pbs", dict(partition="workq", account="proj", cpus=8, gpus=1, mem="32G",
                             workers_per_alloc=2, extra_args=["-l place=scatter"])),
    "local": ("local", dict(workers_per_alloc=2)),
    "sge-minimal": ("sge", {}),
    "sge-full": ("sge", dict(partition="all.q", account="proj", cpus=4, mem="8G",
                             workers_per_alloc=2, extra_args=["-l h_vmem=2G"])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    scheduler, kw = CASES[name]
    text = script(scheduler, **kw)
    path = GOLDEN / f"{name}.sh"
    if os.environ.get("HPCQUEUE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
    check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_values_are_shell_quoted():
    text = script("slurm", env={"X": "a b; rm -rf /"}, modules=["m'1"])
    assert "export X='a b; rm -rf /'" in text
    assert "module load 'm'\"'\"'1'" in text


def test_directive_values_must_be_one_word():
    with pytest.raises(UsageError, match="--partition"):
        QueueParams(scheduler="slurm", time_limit=60, partition="cpu\n#SBATCH --x").validate()
    with pytest.raises(UsageError, match="--mem"):
        QueueParams(scheduler="slurm", time_limit=60, mem="lots").validate()


def test_missing_variable_names_template_line_and_variable(tmp_path):
    t = tmp_path / "site.sh.j2"
    t.write_text("#!/bin/bash\n#SBATCH --time={{ time_limit }}\n#SBATCH --x={{ nosuch }}\n")
    with pytest.raises(TemplateError) as e:
        script("slurm", template=str(t))
    msg = str(e.value)
    assert f"{t} line 3" in msg and "'nosuch' is undefined" in msg


def test_syntax_error_names_template_and_line(tmp_path):
    t = tmp_path / "bad.sh.j2"
    t.write_text("#!/bin/bash\n\n{% if partition %}\n")
    with pytest.raises(TemplateError, match=r"bad.sh.j2 line 3"):
        script("slurm", template=str(t))


STORED_ERRORS = [  # (template text, line, what the message says)
    ("#!/bin/bash\n#SBATCH --x={{ partition }}\n\n#SBATCH --y={{ nosuch }}\n", 4,
     "'nosuch' is undefined"),
    ("#!/bin/bash\n{% if partition %}\n{{ cpus.x.y }}\n{% endif %}\n", 3, "has no attribute"),
    ("#!/bin/bash\n\n\n{% for x in modules %}\n", 4, "endfor"),
]


@pytest.mark.parametrize("text,line,what", STORED_ERRORS)
def test_stored_template_text_errors_name_the_line(text, line, what):
    """A queue renders the text read at `alloc add` (the file may have changed since): its
    errors name the file it came from and the line, as a file's do."""
    params = QueueParams(scheduler="slurm", time_limit=60, partition="cpu", cpus=2,
                         template="/site/templates/site.tmpl", template_text=text).validate()
    sched = backends.scheduler("slurm")
    ctx = sched.context(params, 1, "1.1", Path("/srv/a"), Path("/srv"))
    with pytest.raises(TemplateError) as e:
        render(sched.template, ctx, params.template, template_text=params.template_text)
    assert f"template /site/templates/site.tmpl line {line}: " in str(e.value)
    assert what in str(e.value)


def test_template_error_from_the_cli_names_the_line(tmp_path, monkeypatch):
    """`alloc dry-run --template` reads the file once and renders the stored text."""
    monkeypatch.setattr(sys, "executable", PYTHON)
    t = tmp_path / "site.sh.j2"
    t.write_text("#!/bin/bash\n#SBATCH --time={{ time_limit }}\n{{ worker_cmd }}\n"
                 "{{ nosuch }}\n")
    p = hq("alloc", "dry-run", "slurm", "--template", t, "--time-limit", "10m",
           server_dir=tmp_path / "server", check=False)
    one_clear_line(p, f"template {t} line 4: 'nosuch' is undefined", code=1)


def test_template_override_can_include_packaged_parts(tmp_path):
    t = tmp_path / "site.sh.j2"
    t.write_text("#!/bin/bash\n#SITE {{ partition }}\n{% include 'common-prologue.sh.j2' %}\n"
                 "{{ worker_cmd }}\n")
    text = script("slurm", template=str(t), partition="big")
    assert "#SITE big" in text and "HPCQUEUE_ALLOC_ID=3.7" in text


def test_sandbox_blocks_python_internals(tmp_path):
    t = tmp_path / "evil.sh.j2"
    t.write_text("{{ worker_cmd.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(TemplateError, match="not allowed|unsafe|undefined"):
        script("slurm", template=str(t))


def test_missing_template_file():
    with pytest.raises(TemplateError, match="does not exist"):
        script("slurm", template="/no/such/template.j2")
