"""Whose qsub/qstat/qdel these are (autoalloc/identify.py), and a dry run that never leaves a
job behind; the real Grid Engine case is in test_sge.py."""

import asyncio

import pytest

from hpcqueue.autoalloc import backends
from hpcqueue.autoalloc.identify import check_commands, flavour_of
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.autoalloc.service import dry_run
from hpcqueue.autoalloc.transports.cli import CliTransport
from hpcqueue.exceptions import SchedulerError

#: what each one prints for `CMD --version` (stdout and stderr together)
OUTPUTS = {
    "pbspro qsub": ("pbs_version = 2022.1.3\n", "pbs"),
    "openpbs qstat": ("pbs_version = 20.0.1\n", "pbs"),
    "torque qsub": ("Version: 6.1.3\nCommit: 0ab1c2\n", "torque"),
    "torque qdel": ("Version: 4.2.10\n", "torque"),
    "slurm wrapper qsub": ("Unknown option: version\nUsage:\n    qsub [-a start_time] [-A "
                           "account] [-b y|n] [-e err_path] [-I] [-l\n", "slurm-pbs"),
    "sge qsub": ('qsub: invalid option argument "--version"\nUsage: qsub [options]\n', "sge"),
    "sge qstat": ("SGE 8.1.9\nusage: qstat [options]\n", "sge"),
    "sge qdel": ("The job --version of user(s) root does not exist\n", "sge"),
    "uge qstat": ("UGE 8.6.4\nusage: qstat [options]\n", "sge"),
    "something else": ("qsub: command from elsewhere 1.0\n", None),
}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_version_output_names_the_scheduler(name):
    output, key = OUTPUTS[name]
    found = flavour_of(output)
    assert (found.key if found else None) == key


class Runner:
    """Answers `CMD --version` as the given outputs (a dict by command), failing as Perl's
    Getopt does, and records every command run."""

    def __init__(self, outputs, job_reply="1234.server\n", cancel_fails=False):
        self.outputs = outputs
        self.job_reply = job_reply
        self.cancel_fails = cancel_fails
        self.ran = []

    async def __call__(self, argv, cwd=None, timeout=60.0):
        self.ran.append(argv)
        if argv[1:] == ["--version"]:
            out = self.outputs[argv[0]]
            if out.startswith("Unknown option"):
                raise SchedulerError("failed", command=argv, returncode=2, stdout="",
                                     stderr=out)
            return out
        if argv[0] == "qsub":
            return self.job_reply
        if argv[0] == "qdel" and self.cancel_fails:
            raise SchedulerError("`qdel 1234.server` failed (exit code 1): qdel: Server "
                                 "could not connect", command=argv, returncode=1)
        return ""


def pbs_params():
    return QueueParams(scheduler="pbs", time_limit=600).validate()


def test_grid_engine_qsub_refuses_alloc_add_pbs_before_any_submission(tmp_path):
    runner = Runner({"qsub": OUTPUTS["sge qsub"][0]})
    with pytest.raises(SchedulerError) as e:
        asyncio.run(dry_run(pbs_params(), tmp_path, transport=CliTransport(runner)))
    assert str(e.value) == ("this qsub is Grid Engine's, not PBS's: use `alloc add sge`, or "
                            "put PBS's commands first on PATH")
    assert runner.ran == [["qsub", "--version"]]  # nothing submitted


def test_a_mixed_path_names_the_odd_command(tmp_path):
    runner = Runner({"qsub": "pbs_version = 2022.1.3\n", "qstat": "pbs_version = 2022.1.3\n",
                     "qdel": OUTPUTS["sge qdel"][0]})
    with pytest.raises(SchedulerError, match="this qdel is Grid Engine's"):
        asyncio.run(dry_run(pbs_params(), tmp_path, transport=CliTransport(runner)))
    sge = backends.scheduler("sge")
    runner = Runner({c: OUTPUTS["slurm wrapper qsub"][0] for c in ("qsub", "qstat", "qdel")})
    with pytest.raises(SchedulerError, match="this qsub is Slurm's PBS wrapper, not Grid Engine's: "
                                         "use `alloc add pbs`"):
        asyncio.run(check_commands(sge, runner))


def test_pbs_torque_and_slurm_wrappers_pass_and_the_held_job_is_cancelled(tmp_path):
    for name in ("pbspro qsub", "torque qsub", "slurm wrapper qsub", "something else"):
        runner = Runner({c: OUTPUTS[name][0] for c in ("qsub", "qstat", "qdel")})
        asyncio.run(dry_run(pbs_params(), tmp_path, transport=CliTransport(runner)))
        assert [a[0] for a in runner.ran] == ["qsub", "qstat", "qdel", "qsub", "qdel"], name
        assert runner.ran[-1] == ["qdel", "1234.server"]


def test_a_reply_that_is_no_pbs_job_id_is_an_error_quoting_it(tmp_path):
    runner = Runner({c: "pbs_version = 2022.1.3\n" for c in ("qsub", "qstat", "qdel")},
                    job_reply='Your job 12 ("hpcq-0-dry-run") has been submitted\n')
    with pytest.raises(SchedulerError) as e:
        asyncio.run(dry_run(pbs_params(), tmp_path, transport=CliTransport(runner)))
    assert "replied 'Your job 12 (\"hpcq-0-dry-run\") has been submitted', not a PBS job " \
           "id" in str(e.value)
    pbs = backends.scheduler("pbs")
    for good in ("123", "123.pbs01", "77[].server.site.org", "5[3].srv"):
        assert pbs.parse_submit(good + "\n", ["qsub"]) == good


def test_a_held_job_that_cannot_be_cancelled_is_named_with_the_command_to_remove_it(tmp_path):
    runner = Runner({c: "pbs_version = 2022.1.3\n" for c in ("qsub", "qstat", "qdel")},
                    cancel_fails=True)
    with pytest.raises(SchedulerError) as e:
        asyncio.run(dry_run(pbs_params(), tmp_path, transport=CliTransport(runner)))
    assert "held job 1234.server was submitted but could not be cancelled" in str(e.value)
    assert "remove it with `qdel 1234.server`" in str(e.value)
