"""The scheduler registry: a new scheduler is one module and one template.

This follows the recipe of docs/transports.md ("A new scheduler") to the letter: an `lsf`
scheduler (a stand-in: bsub, bjobs and bkill are fakes here) in `hpcqueue_schedulers/` in a
directory on PYTHONPATH, and `alloc dry-run`, `alloc add` (with its dry run and reach probe) and
`config validate` take it.  The fakes run a job's script in the background as a scheduler
would, so the reach probe really connects back.
"""

from __future__ import annotations

import os
import stat
import sys
import textwrap

import pytest
from conftest import hq, one_clear_line, wait_for

from hpcqueue.autoalloc import backends
from hpcqueue.autoalloc.options import EDITABLE, OPTIONS

#: the recipe's module: hpcqueue_schedulers/lsf.py in a directory on PYTHONPATH
LSF_MODULE = '''\
"""LSF: bsub, one bjobs call for all allocations, bkill."""

import re

from hpcqueue.autoalloc.schedulers.base import RawStatus, Scheduler
from hpcqueue.exceptions import SchedulerError


class Lsf(Scheduler):
    name = "lsf"                   # `alloc add lsf`, `scheduler: lsf`
    template = "lsf.sh.j2"         # beside this module
    transports = ("cli", "ssh")    # what --transport may be
    batch_env = ("LSB_JOBID",)     # how a worker recognises its batch job
    queued_words = frozenset({"PEND", "PSUSP"})
    running_words = frozenset({"RUN", "USUSP", "SSUSP"})

    def submit_argv(self, script, hold):
        return ["bsub"] + (["-H"] if hold else []) + [str(script)]

    def parse_submit(self, stdout, argv):
        found = re.search(r"Job <(\\d+)>", stdout)
        if not found:
            raise SchedulerError(f"bsub printed no job id: {stdout!r}", command=argv)
        return found.group(1)

    def status_argv(self, job_ids):
        return ["bjobs", "-noheader", "-o", "jobid stat"] + list(job_ids)

    def parse_status(self, stdout):
        rows = (line.split() for line in stdout.splitlines())
        return {row[0]: RawStatus(row[1]) for row in rows if len(row) >= 2}

    def cancel_argv(self, job_ids):
        return ["bkill"] + list(job_ids)
'''

#: the recipe's template, beside the module: hpcqueue_schedulers/lsf.sh.j2
LSF_TEMPLATE = """\
#!/bin/bash
#BSUB -J {{ name }}
#BSUB -W {{ (time_limit_seconds + 59) // 60 }}
#BSUB -o {{ stdout | shquote }}
#BSUB -e {{ stderr | shquote }}
{%- if partition %}
#BSUB -q {{ partition }}
{%- endif %}
{%- for arg in extra_args %}
#BSUB {{ arg }}
{%- endfor %}
{% include "common-prologue.sh.j2" %}
{{ worker_cmd }}
{% include "common-epilogue.sh.j2" %}
"""

#: fake LSF commands: a job runs its script in the background unless held (-H)
BSUB = """\
#!/bin/bash
jobs=%(jobs)s
hold=
if [ "$1" = -H ]; then hold=1; shift; fi
n=$(( $(cat "$jobs/next" 2>/dev/null || echo 100) + 1 )); echo $n > "$jobs/next"
echo "bsub ${hold:+-H }$*" >> "$jobs/calls"
if [ -n "$hold" ]; then
  echo PEND > "$jobs/$n"
else
  echo RUN > "$jobs/$n"
  (LSB_JOBID=$n bash "$1"; echo DONE > "$jobs/$n") </dev/null >/dev/null 2>"$jobs/$n.err" &
fi
echo "Job <$n> is submitted to default queue <normal>."
"""
BJOBS = """\
#!/bin/bash
jobs=%(jobs)s
shift 3
for id in "$@"; do [ -f "$jobs/$id" ] && echo "$id $(cat "$jobs/$id")"; done
exit 0
"""
BKILL = """\
#!/bin/bash
jobs=%(jobs)s
echo "bkill $*" >> "$jobs/calls"
for id in "$@"; do echo EXIT > "$jobs/$id"; echo "Job <$id> is being terminated"; done
"""


@pytest.fixture
def lsf(tmp_path):
    """The environment in which hpcqueue has an `lsf` scheduler (PYTHONPATH) whose commands
    are the fakes (PATH), and the dir where the fakes keep their jobs."""
    plugin = tmp_path / "plugin"
    where = plugin / "hpcqueue_schedulers"
    where.mkdir(parents=True)
    (where / "lsf.py").write_text(LSF_MODULE)
    (where / "lsf.sh.j2").write_text(LSF_TEMPLATE)
    bin_dir, jobs = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in (("bsub", BSUB), ("bjobs", BJOBS), ("bkill", BKILL)):
        path = bin_dir / name
        path.write_text(text % {"jobs": jobs})
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    path = os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, jobs


def test_the_docs_recipe_is_this_test():
    import re
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "transports.md").read_text()
    blocks = [textwrap.dedent(b) for b in
              re.findall(r"^   ```(?:python|jinja)\n(.*?)^   ```$", docs, re.M | re.S)]
    assert blocks == [LSF_MODULE, LSF_TEMPLATE]


def calls(jobs) -> list[str]:
    path = jobs / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_dry_run_of_a_registered_scheduler(lsf, tmp_path):
    env, jobs = lsf
    p = hq("alloc", "dry-run", "lsf", "--time-limit", "90m", "--partition", "short",
           "--", "-R rusage[mem=100]", server_dir=tmp_path / "sd", env=env)
    assert "dry run passed" in p.stderr
    assert "#BSUB -W 90\n#BSUB" in p.stdout and "#BSUB -q short" in p.stdout
    assert "#BSUB -R rusage[mem=100]" in p.stdout
    assert "-m hpcqueue worker start" in p.stdout
    assert calls(jobs) == [f"bsub -H {tmp_path}/sd/autoalloc/dry-run/job.sh", "bkill 101"]


def test_without_the_module_lsf_is_refused_clearly(tmp_path):
    p = hq("alloc", "dry-run", "lsf", "--time-limit", "1h", server_dir=tmp_path / "sd",
           check=False)
    one_clear_line(p, "'lsf'", "must be one of", "slurm", code=2)


def test_config_validate_takes_the_scheduler(lsf, tmp_path):
    env, _ = lsf
    site = tmp_path / "site.yaml"
    site.write_text("profiles:\n  big:\n    scheduler: lsf\n    transport: ssh\n"
                    "    time-limit: 2h\n")
    assert "ok" in hq("config", "validate", site, env=env).stdout
    p = hq("config", "validate", site, check=False)  # the same file, without the module
    assert p.returncode == 1 and "site.yaml:3: profiles.big.scheduler: must be one of" \
        in p.stderr
    site.write_text("profiles:\n  big:\n    scheduler: lsf\n    transport: drmaa\n")
    p = hq("config", "validate", site, env=env, check=False)
    assert p.returncode == 1 and "profiles.big.transport" in p.stderr  # drmaa: for sge only


def test_alloc_add_runs_tasks_through_the_registered_scheduler(lsf, cluster):
    env, jobs = lsf
    cluster.start_server(env=env)
    p = cluster.hq("alloc", "add", "lsf", "--time-limit", "10m", "--idle-timeout", "2s",
                   "--name", "big", env=env)
    assert "dry run passed" in p.stdout
    assert "reached the server" in p.stdout  # the probe job ran and connected back
    cluster.hq("submit", "--stdout", "none", "--", "true")
    assert "1 finished" in cluster.hq("job", "wait", "1", timeout=60).stdout
    workers = cluster.workers()
    assert any(w["batch_job"] and w["batch_job"].startswith("lsf:") for w in workers), workers
    rows = [q for q in json_rows(cluster.hq("alloc", "list", "--output", "json").stdout)]
    assert rows[0]["scheduler"] == "lsf"
    wait_for(lambda: sum(c.startswith("bsub ") for c in calls(jobs)) >= 3,
             what="dry run, probe and an allocation submitted")


def json_rows(text):
    import json

    return json.loads(text)


def test_every_scheduler_declares_itself():
    for name, cls in backends.schedulers().items():
        assert cls.name == name and cls.template.endswith(".sh.j2")
        assert cls.transports and set(cls.transports) <= set(backends.TRANSPORTS)
    assert backends.transports_for("sge") == ("cli", "drmaa", "ssh")
    assert backends.scheduler("sge").drmaa_native_spec == "-b n"
    assert backends.batch_job({"SLURM_JOB_ID": "4", "PBS_JOBID": "9"}) == ("slurm", "4")
    assert backends.batch_job({"JOB_ID": "3"}) == (None, None)  # SGE needs SGE_O_WORKDIR too
    assert backends.batch_job({"JOB_ID": "3", "SGE_O_WORKDIR": "/x"}) == ("sge", "3")


def test_a_starting_worker_finds_its_batch_job_without_rendering():
    code = ("import sys; from hpcqueue.worker import batch; print(batch.batch_job()); "
            "print(sorted(m for m in ('jinja2', 'yaml', 'click', 'hpcqueue.autoalloc.render') "
            "if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PBS_JOBID="7.srv"), check=True).stdout
    assert out.splitlines() == ["('pbs', '7.srv')", "[]"]


def test_the_option_table_is_consistent():
    fields = [o.field for o in OPTIONS]
    assert len(fields) == len(set(fields))
    assert {o.field for o in EDITABLE} >= {"backlog", "max_worker_count", "time_limit",
                                           "idle_timeout"}
    assert not {o.field for o in EDITABLE} & {"scheduler", "transport", "login_host"}
