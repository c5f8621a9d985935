"""The runner in-process: tasks started by the launching threads (posix_spawn through the C
library, or Popen where it is missing), their sessions, signals, fds and outputs."""

import asyncio
import os
import signal

import pytest

from hpcqueue.worker import spawn
from hpcqueue.worker.runner import Runner

PROBE = ("read pid _ < /proc/self/stat; stat=$(cat /proc/$$/stat); set -- ${stat##*) };"
         " echo pgrp=$3 sid=$4 pid=$$;"
         " grep SigIgn /proc/$$/status; echo fds:; ls /proc/$$/fd; echo :fds;"
         " echo cwd=$(pwd) task=$HPCQUEUE_TASK_ID inst=$HPCQUEUE_INSTANCE_ID x=$X")


def run_tasks(defs: dict, tasks: list, *, spawner: bool = True, cancel=(), timeout=20.0,
              rows_wanted: int | None = None):
    """Run TASKS of DEFS on a Runner of 2 cpus in a new loop; the reported rows by id, once
    ROWS_WANTED (default: all) are in (the runner's shutdown kills the others)."""

    async def main():
        loop = asyncio.get_running_loop()
        rows, wanted = {}, {}
        done = asyncio.Event()

        def report(row):
            rows[row[1]] = row
            if len(rows) == (rows_wanted or len(tasks)) and not done.is_set():
                wanted.update(rows)  # (the shutdown's kills report later rows: not these)
                done.set()

        r = Runner(loop, 2, {}, report)
        if not spawner:
            r.spawner = None
        try:
            r.add(defs, tasks)
            if cancel:
                r.kill(cancel)  # before any launching thread has handed its task back
            await asyncio.wait_for(done.wait(), timeout)
        finally:
            r.shutdown()
        return wanted

    return asyncio.run(main())


def task(i: int, instance: int = 1):
    return (1, i, i, instance, None)


def parse(text: str) -> dict:
    out = {}
    for word in text.split():
        if "=" in word:
            k, _, v = word.partition("=")
            out[k] = v
    return out


@pytest.mark.parametrize("spawner", [True, False], ids=["posix_spawn", "popen"])
def test_a_task_runs_in_its_own_session_with_default_signals_and_only_its_three_fds(
        tmp_path, spawner):
    if spawner and spawn.spawner() is None:
        pytest.skip("this C library has no posix_spawn chdir")
    defs = {1: {"cmd": ["sh", "-c", PROBE], "cwd": str(tmp_path), "env": {"X": "y z"},
                "stdout": "%{CWD}/%{TASK_ID}.out", "stderr": "%{CWD}/%{TASK_ID}.err"}}
    rows = run_tasks(defs, [task(1, 3), task(2)], spawner=spawner)
    assert [rows[i][3] for i in (1, 2)] == [0, 0], rows
    for i, inst in ((1, 3), (2, 1)):
        text = (tmp_path / f"{i}.out").read_text()
        got = parse(text)
        assert got["pgrp"] == got["sid"] == got["pid"], text  # a session of its own
        assert "SigIgn:\t0000000000000000" in text, text  # SIGPIPE back to its default
        fds = text.split("fds:", 1)[1].split(":fds", 1)[0].split()
        assert fds == ["0", "1", "2"], text  # the worker's other fds are not inherited
        assert got["cwd"] == str(tmp_path) and got["task"] == str(i), text
        assert got["inst"] == str(inst) and got["x"] == "y", text
        assert (tmp_path / f"{i}.err").read_text() == ""


def test_output_folders_are_made_once_and_dev_null_is_opened_once(tmp_path, monkeypatch):
    made, opened = [], []
    real_makedirs, real_open = os.makedirs, os.open

    def makedirs(path, *a, **k):
        made.append(str(path))
        return real_makedirs(path, *a, **k)

    def open_(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setattr(os, "open", open_)
    defs = {1: {"cmd": ["sh", "-c", "echo out $HPCQUEUE_TASK_ID"], "cwd": str(tmp_path),
                "stdout": "%{CWD}/deep/job-%{JOB_ID}/%{TASK_ID}.stdout", "stderr": "none"}}
    n = 12
    rows = run_tasks(defs, [task(i) for i in range(1, n + 1)])
    assert all(row[3] == 0 for row in rows.values()), rows
    out = tmp_path / "deep" / "job-1"
    # once for the job, not once per task (makedirs calls itself for the parents)
    assert made.count(str(out)) == 1, made
    # by the runner and for its reaper when it started, never per task
    assert opened.count(os.devnull) == 2, opened
    for i in range(1, n + 1):
        assert (out / f"{i}.stdout").read_text() == f"out {i}\n"


def test_a_removed_output_folder_is_made_again(tmp_path):
    defs = {1: {"cmd": ["sh", "-c", "echo $HPCQUEUE_TASK_ID; rm -rf \"$PWD/o\""],
                "cwd": str(tmp_path), "stdout": "%{CWD}/o/%{TASK_ID}", "stderr": "none"}}
    rows = run_tasks({1: {**defs[1]}}, [task(1)])
    assert rows[1][3] == 0
    # the runner remembered the folder; a later task after it was removed still gets it
    defs2 = {1: {**defs[1], "cmd": ["sh", "-c", "echo $HPCQUEUE_TASK_ID"]}}
    rows = run_tasks(defs2, [task(2)])
    assert rows[2][3] == 0 and (tmp_path / "o" / "2").read_text() == "2\n"


def test_a_task_cancelled_while_it_is_being_started_is_killed():
    defs = {1: {"cmd": ["sleep", "30"], "stdout": "none", "stderr": "none"}}
    rows = run_tasks(defs, [task(1), task(2)], cancel=[(1, 1)], timeout=10, rows_wanted=1)
    assert list(rows) == [1] and rows[1][3] == -signal.SIGTERM, rows  # task 2 runs on


def test_missing_command_and_working_directory_fail_with_their_names(tmp_path):
    missing = tmp_path / "gone"
    defs = {1: {"cmd": ["no-such-command-hq"], "stdout": "none", "stderr": "none"},
            2: {"cmd": ["true"], "cwd": str(missing), "stdout": "%{CWD}/out",
                "stderr": "none"},
            3: {"cmd": [str(tmp_path)], "stdout": "none", "stderr": "none"}}
    rows = {}
    for job_id in (1, 2, 3):
        got = run_tasks({job_id: defs[job_id]}, [(job_id, 1, 1, 1, None)])
        rows[job_id] = got[1]
    assert rows[1][3] == 127 and rows[1][6] == "command not found: no-such-command-hq"
    assert rows[2][3] == 127 and str(missing) in rows[2][6] \
        and "no such directory" in rows[2][6], rows[2]
    assert not missing.exists()  # the output file did not create the working directory
    assert rows[3][3] == 126 and "permission denied" in rows[3][6], rows[3]
