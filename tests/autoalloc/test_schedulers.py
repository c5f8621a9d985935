"""Scheduler dialects: commands, status parsing and how allocations ended.

The outputs below are what Slurm 22.05 and its PBS wrappers print (recorded on
the CI cluster); the real commands are exercised in test_slurm.py.
"""

from pathlib import Path

from hpcqueue.autoalloc import backends
from hpcqueue.autoalloc.model import AllocState
from hpcqueue.autoalloc.schedulers.base import RawStatus
from hpcqueue.exceptions import SchedulerError

SQUEUE = """11|FAILED|NonZeroExitCode|768|
12|CANCELLED|None|15|
13|TIMEOUT|TimeLimit|15|
10|COMPLETED|None|0|
20|PENDING|Priority|0|
21|RUNNING|None|0|
"""


def test_slurm_status_one_call_for_many_jobs():
    slurm = backends.scheduler("slurm")
    argv = slurm.status_argv(["10", "11", "12"])
    assert argv[0] == "squeue" and "--jobs=10,11,12" in argv and "--states=all" in argv
    st = slurm.parse_status(SQUEUE)
    assert st["11"].word == "FAILED" and st["11"].exit_code == 3
    assert st["12"].exit_code == 128 + 15


def test_slurm_status_gives_the_jobs_own_start_and_end():
    from datetime import datetime

    slurm = backends.scheduler("slurm")
    assert "StartTime:|" in slurm.status_argv(["1"])[-1]
    st = slurm.parse_status("30|COMPLETED|None|0|2026-11-25T01:32:03|2026-11-25T01:33:10|\n"
                            "31|RUNNING|None|0|2026-11-25T01:32:03|2026-11-25T02:32:03|\n"
                            "32|PENDING|Priority|0|2026-11-26T00:00:00|2026-11-26T01:00:00|\n"
                            "33|CANCELLED|None|15|N/A|Unknown|\n")
    start = datetime(2026, 11, 25, 1, 32, 3).timestamp()
    assert (st["30"].started, st["30"].ended) == (start, start + 67)
    assert (st["31"].started, st["31"].ended) == (start, None)  # its EndTime is its limit
    assert (st["32"].started, st["32"].ended) == (None, None)  # a guess
    assert (st["33"].started, st["33"].ended) == (None, None)
    assert st["30"].word == "COMPLETED" and st["33"].exit_code == 128 + 15


def test_slurm_classification():
    slurm = backends.scheduler("slurm")
    st = slurm.parse_status(SQUEUE)
    assert slurm.classify(st["20"], False) == (AllocState.QUEUED, None)
    assert slurm.classify(st["21"], False) == (AllocState.RUNNING, None)
    state, end = slurm.classify(st["10"], True)
    assert state is AllocState.FINISHED and not end.fault
    state, end = slurm.classify(st["10"], False)
    assert state is AllocState.FAILED and end.fault and "before any worker" in end.text
    for job, text in (("12", "cancelled"), ("13", "time limit")):
        state, end = slurm.classify(st[job], False)
        assert state is AllocState.FINISHED and not end.fault and text in end.text
    state, end = slurm.classify(st["11"], True)
    assert state is AllocState.FAILED and end.fault
    for word in ("PREEMPTED", "NODE_FAIL"):
        assert not slurm.classify(RawStatus(word), False)[1].fault
    state, end = slurm.classify(None, True)  # gone from squeue after MinJobAge
    assert state is AllocState.FINISHED


def test_slurm_unknown_single_id_means_gone():
    slurm = backends.scheduler("slurm")
    err = SchedulerError("x", returncode=1,
                         stderr="slurm_load_jobs error: Invalid job id specified\n")
    assert slurm.status_error_means_gone(err)
    assert not slurm.status_error_means_gone(SchedulerError("x", returncode=1, stderr="boom"))


def test_slurm_submit_and_cancel_commands():
    slurm = backends.scheduler("slurm")
    assert slurm.submit_argv(Path("/a/job.sh"), hold=True) == \
        ["sbatch", "--parsable", "--hold", "/a/job.sh"]
    assert slurm.parse_submit("123;cluster\n", []) == "123"
    assert slurm.cancel_argv(["1", "2"]) == ["scancel", "1", "2"]
    assert slurm.time(90000) == "1-01:00:00" and slurm.time(30) == "00:01:00"


QSTAT_F = """Job Id: 20
    Job_Name = hpcq-1-1
    job_state = R
    queue = debug
Job Id: 21.server
    job_state = C
    Exit_status = 0
Job Id: 22
    job_state = Q
"""


def test_pbs_status_and_commands():
    pbs = backends.scheduler("pbs")
    st = pbs.parse_status(QSTAT_F)
    assert pbs.classify(st["20"], False)[0] is AllocState.RUNNING
    assert pbs.classify(st["21"], True)[0] is AllocState.FINISHED
    assert pbs.classify(st["22"], False)[0] is AllocState.QUEUED
    argv = pbs.submit_argv(Path("/a/1/job.sh"), hold=False)
    assert argv[0] == "qsub" and argv[-1] == "/a/1/job.sh" and "/a/1/stdout" in argv
    assert pbs.status_error_means_gone(SchedulerError("x", returncode=153))
    assert pbs.classify(RawStatus("F", exit_code=-11), True)[1].text == "time limit reached"


QSTAT_SGE = """\
job-ID  prior   name       user   state submit/start at     queue    slots ja-task-ID
-----------------------------------------------------------------------------------------
     66 0.50000 hpcq-1-1   root         r     11/22/2026 13:58:41 all.q@vm     1
     67 0.00000 hpcq-1-2   root         qw    11/22/2026 13:58:42              1
     68 0.00000 hpcq-1-3   root         Eqw   11/22/2026 13:58:43              1
"""


def test_sge_status_and_commands():
    sge = backends.scheduler("sge")
    st = sge.parse_status(QSTAT_SGE)
    assert sge.classify(st["66"], False)[0] is AllocState.RUNNING
    assert sge.classify(st["67"], False)[0] is AllocState.QUEUED
    state, end = sge.classify(st["68"], False)
    assert state is AllocState.FAILED and end.fault and "Eqw" in end.text
    assert sge.classify(None, True)[0] is AllocState.FINISHED  # gone from qstat
    assert sge.submit_argv(Path("/a/job.sh"), hold=True) == ["qsub", "-terse", "-h", "/a/job.sh"]
    assert sge.parse_submit("36.1-2:1\n", []) == "36"
    assert sge.status_argv(["1", "2"]) == ["qstat", "-u", "*"]


def test_drmaa_phases_classify_for_any_scheduler():
    for name in ("sge", "slurm", "pbs"):
        sched = backends.scheduler(name)
        assert sched.classify(RawStatus("queued_active", phase="queued"), False)[0] \
            is AllocState.QUEUED
        state, end = sched.classify(RawStatus("failed", phase="ended", aborted=True), True)
        assert state is AllocState.FINISHED and end.text == "cancelled"
        state, end = sched.classify(RawStatus("done", phase="ended", exit_code=3), True)
        assert state is AllocState.FAILED and end.fault
