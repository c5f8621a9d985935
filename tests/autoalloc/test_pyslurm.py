"""The pyslurm adapter against an in-process stand-in with pyslurm's documented API.

PyPI has pyslurm 25.11 only and it must match the cluster's Slurm (22.05 in CI), so the
real module cannot run here; the clear error for that is tested for real.
"""

import asyncio
import types
from pathlib import Path

import pytest
from conftest import hq

from hpcqueue.autoalloc import backends
from hpcqueue.autoalloc.model import AllocState
from hpcqueue.autoalloc.transports.pyslurm import PyslurmTransport, load_pyslurm
from hpcqueue.exceptions import SchedulerError


def stand_in(version="22.05.8"):
    """Jobs live in a dict; the API shapes follow pyslurm 23+ (JobSubmitDescription, Jobs)."""
    jobs = {}

    class RPCError(Exception):
        pass

    class Job:
        def __init__(self, job_id):
            self.id = job_id

        def cancel(self):
            if self.id not in jobs:
                raise RPCError("Invalid job id specified")
            jobs[self.id].state = "CANCELLED"

    class Jobs(dict):
        @staticmethod
        def load():
            return Jobs(jobs)

    class JobSubmitDescription:
        def __init__(self, **kw):
            self.priority = None
            self.partitions = None
            self.__dict__.update(kw)

        def load_sbatch_options(self):
            for line in Path(self.script).read_text().splitlines():
                if line.startswith("#SBATCH --partition="):
                    self.partitions = line.split("=", 1)[1]

        def submit(self):
            if self.partitions == "nosuch":
                raise RPCError("Invalid partition name specified")
            job_id = 1000 + len(jobs)
            held = self.priority == 0
            jobs[job_id] = types.SimpleNamespace(
                state="PENDING", state_reason="JobHeldUser" if held else "None", exit_code=0,
                desc=self)
            return job_id

    mod = types.SimpleNamespace(__version__=version, RPCError=RPCError, Job=Job, Jobs=Jobs,
                                JobSubmitDescription=JobSubmitDescription)
    return mod, jobs


def run(coro):
    return asyncio.run(coro)


def test_submit_status_cancel(tmp_path):
    mod, jobs = stand_in()
    t = PyslurmTransport(module=mod, version="22.05.8")
    slurm = backends.scheduler("slurm")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --partition=cpu\n")
    job_id = run(t.submit(slurm, script, tmp_path))
    assert job_id == "1000" and jobs[1000].desc.partitions == "cpu"
    assert jobs[1000].desc.working_directory == str(tmp_path)
    st = run(t.status(slurm, ["1000", "999"]))
    assert list(st) == ["1000"] and slurm.classify(st["1000"], False)[0] is AllocState.QUEUED
    run(t.cancel(slurm, ["1000"]))
    state, end = slurm.classify(run(t.status(slurm, ["1000"]))["1000"], False)
    assert end.text == "cancelled" and not end.fault
    held = run(t.submit(slurm, script, tmp_path, hold=True))
    assert jobs[int(held)].state_reason == "JobHeldUser"


def test_rpc_errors_become_scheduler_errors(tmp_path):
    mod, _ = stand_in()
    t = PyslurmTransport(module=mod, version="22.05.8")
    script = tmp_path / "job.sh"
    script.write_text("#SBATCH --partition=nosuch\n")
    with pytest.raises(SchedulerError, match="Invalid partition name"):
        run(t.submit(backends.scheduler("slurm"), script, tmp_path))


def test_version_mismatch_names_both_versions():
    mod, _ = stand_in(version="25.11.2")
    with pytest.raises(SchedulerError) as e:
        load_pyslurm(mod, version="22.05.8")
    assert "pyslurm 25.11.2" in str(e.value) and "Slurm 22.05.8" in str(e.value)
    assert "--transport cli" in str(e.value)


def test_missing_module_is_a_clear_error_at_add(tmp_path, slurm):
    p = hq("alloc", "dry-run", "slurm", "--transport", "pyslurm", "--partition", "cpu",
           "--time-limit", "10m", server_dir=tmp_path / "sd", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "pyslurm" in p.stderr and "22.05" in p.stderr and "--transport cli" in p.stderr
    # PyPI has no pyslurm for 22.05: the message must not send the user to pip for it
    assert "pip install" not in p.stderr and "build pyslurm from its source" in p.stderr


def test_install_hint_suggests_pip_only_where_pypi_has_a_build():
    from hpcqueue.autoalloc.transports.pyslurm import install_hint

    assert "pip install 'hpcqueue[pyslurm]'" in install_hint("25.11.2")
    for version in ("22.05.8", "23.11.1", None):
        assert "pip install" not in install_hint(version)
    assert "23.11" in install_hint("23.11.1")
