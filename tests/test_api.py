"""The Python API (hpcqueue.Client, hpcqueue.LocalCluster), used as a script would: no
command line, a real server and real workers in this process."""

import os
import time

import pytest

import hpcqueue


@pytest.fixture(scope="module")
def local():
    with hpcqueue.LocalCluster(workers=2, cpus=2) as cluster:
        yield cluster


@pytest.fixture
def client(local):
    with local.client() as c:
        yield c


def test_import_is_cheap_and_lists_the_api():
    import subprocess
    import sys

    code = ("import sys, hpcqueue; print(sorted(m for m in sys.modules "
            "if m.startswith('hpcqueue'))); print(dir(hpcqueue))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "['hpcqueue']"
    for name in ("Client", "LocalCluster", "Job", "Task", "NotFound", "ServerUnreachable"):
        assert f"'{name}'" in out[1]


def test_an_array_of_1000_tasks_some_failing(client, tmp_path):
    job = client.submit("echo out-$HPCQUEUE_TASK_ID; test $((HPCQUEUE_TASK_ID % 7)) -ne 0",
                        array="1-1000", cwd=tmp_path)
    summary = job.wait()
    assert (summary.id, summary.tasks, summary.finished, summary.failed) == \
        (job.id, 1000, 858, 142)
    assert summary.done and not summary.ok and summary.state == "failed"

    codes = {t.id: t.exit_code for t in job.tasks()}
    assert len(codes) == 1000
    assert codes == {i: int(i % 7 == 0) for i in range(1, 1001)}

    failed = [t.id for t in job.tasks(state="failed")]
    assert failed == list(range(7, 1001, 7))
    assert [t.id for t in job.tasks("1-20", state=hpcqueue.TaskState.FAILED)] == [7, 14]
    assert [t.id for t in job.tasks(range(100, 200), state="finished", limit=3)] == \
        [100, 101, 102]

    task = job.task(42)
    assert (task.state, task.exit_code) == ("failed", 1)
    assert task.stdout() == "out-42\n" and task.stderr() == ""
    assert (tmp_path / f"job-{job.id}" / "42.stdout").read_text() == "out-42\n"


def test_progress_is_pushed_until_the_job_ends(client, tmp_path):
    job = client.submit(["sleep", "0.1"], array="1-20", cwd=tmp_path)
    t0 = time.monotonic()
    updates = list(job.progress(interval=0.05))
    assert time.monotonic() - t0 > 0.5  # 20 tasks of 0.1s on 4 cpus: pushed as they ran
    assert updates[-1].done and updates[-1].finished == 20
    ended = [u.finished + u.failed + u.canceled for u in updates]
    assert ended == sorted(ended)  # counts only grow
    assert len(updates) >= 3 and not updates[0].done and 0 < len(set(ended))
    assert any(0 < e < 20 for e in ended), ended  # seen on the way, not only at the ends


def test_lines_json_and_streamed_output(client, tmp_path):
    job = client.submit(each_line=["echo a", "# a comment", "", "echo b >&2; exit 3"],
                        stream=tmp_path / "logs")
    assert job.wait().tasks == 2
    first, second = job.tasks()
    assert (first.entry, first.exit_code, first.stdout()) == ("echo a", 0, "a\n")
    assert (second.exit_code, second.stdout(), second.stderr()) == (3, "", "b\n")

    job = client.submit(["sh", "-c", 'echo "$HPCQUEUE_ENTRY"'], from_json=[{"x": 1}, [2]],
                        cwd=tmp_path, env={"UNUSED": "1"})
    job.wait()
    assert [t.stdout() for t in job.tasks()] == ['{"x": 1}\n', "[2]\n"]


def test_cancel_and_forget(client, tmp_path):
    job = client.submit(["sleep", "60"], array="1-8", cwd=tmp_path, name="long")
    for update in job.progress(interval=0.05):
        if update.running:
            break
    with pytest.raises(hpcqueue.Refused, match=f"job {job.id} is running.*cancel it"):
        job.forget()
    assert job.cancel() is True
    summary = job.wait()
    assert summary.state == "canceled" and summary.canceled >= 1 and summary.finished == 0
    assert job.cancel() is False  # it has ended
    assert job.id in [s.id for s in client.jobs(state="canceled")]
    assert client.forget(job) == [job.id]
    with pytest.raises(hpcqueue.NotFound, match=f"no job {job.id}"):
        job.info()


def test_typed_errors(client, local, tmp_path):
    with pytest.raises(hpcqueue.NotFound, match="no job 999999"):
        client.job(999999)
    with pytest.raises(hpcqueue.NotFound, match="has no task 5"):
        client.submit("true", cwd=tmp_path).task(5)
    with pytest.raises(hpcqueue.UsageError, match="invalid task id range|array"):
        client.submit("true", array="1-x")
    with pytest.raises(hpcqueue.UsageError, match="cpus must be a whole number"):
        client.submit("true", cpus=0)
    with pytest.raises(hpcqueue.UsageError, match="each_line and from_json|cannot be combined"):
        client.submit("true", each_line=["a"], from_json=[1])
    assert client.workers() and [w["state"] for w in client.workers()] == ["running"] * 2
    assert client.queues() == []

    with pytest.raises(hpcqueue.ServerUnreachable, match="no server in"):
        hpcqueue.Client(tmp_path / "nothing-here").jobs()


def test_a_workflow_of_task_dependencies_and_a_job_after_it(client, tmp_path):
    """Task 0 prepares, tasks 1-8 wait for it, task 9 reduces them (DEPS), and a second job
    waits for the whole of the first (DEPENDS_ON); a failed task cancels what waits for it."""
    step = ("test -z \"$NEED\" || for f in $NEED; do test -e $f || exit 7; done; "
            "sleep 0.3; touch %s/done-$HPCQUEUE_TASK_ID")
    deps = {i: [0] for i in range(1, 9)}
    deps[9] = list(range(1, 9))
    # each task checks that the files of the tasks it waits for exist when it starts
    env_need = " ".join(f"{tmp_path}/done-{i}" for i in range(1, 9))
    cmd = ("case $HPCQUEUE_TASK_ID in 0) NEED= ;; 9) NEED=\"" + env_need + "\" ;; "
           f"*) NEED={tmp_path}/done-0 ;; esac; " + step % tmp_path)
    job = client.submit(cmd, array=range(10), deps=deps, stdout="none", stderr="none")
    after = client.submit(f"touch {tmp_path}/after", depends_on=job, stdout="none",
                          stderr="none")
    assert after.info()["spec"]["after"] == [job.id]
    assert job.wait().ok and after.wait().ok
    tasks = {t.id: t for t in job.tasks()}
    assert all(tasks[i].start >= tasks[0].end - 0.01 for i in range(1, 9))
    assert tasks[9].start >= max(tasks[i].end for i in range(1, 9)) - 0.01
    assert (tmp_path / "after").exists()
    # a failure: task 1 fails, task 2 (which waits for it) is canceled with the reason
    failing = client.submit("test $HPCQUEUE_TASK_ID -ne 1", array="0-2", deps={2: [1]},
                            stdout="none", stderr="none")
    summary = failing.wait()
    assert (summary.finished, summary.failed, summary.canceled) == (1, 1, 1)
    assert failing.task(2).error == "canceled: task 1 it depends on failed"
    with pytest.raises(hpcqueue.UsageError, match="cycle: task 0 -> task 1 -> task 0"):
        client.submit("true", array="0-1", deps={0: [1], 1: [0]})
    with pytest.raises(hpcqueue.NotFound, match="no job 999"):
        client.submit("true", depends_on=999)


def test_a_closed_cluster_is_unreachable(tmp_path):
    with hpcqueue.LocalCluster(workers=1, cpus=1) as cluster:
        client = cluster.client()
        job = client.submit("echo hi", cwd=tmp_path)
        assert job.wait().ok
        server_dir = cluster.server_dir
        assert server_dir.is_dir()
    assert not server_dir.exists()
    with pytest.raises(hpcqueue.ServerUnreachable):
        hpcqueue.Client(server_dir).job(job.id)


def test_a_map_of_a_python_function_over_1000_items_and_a_remote_exception(client, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # (where the calls' output files go)
    offset = 7  # closures travel by value: the workers need not import this module

    def shifted_square(x):
        return x * x + offset

    def checked(x):
        if x < 0:
            raise ValueError(f"negative input {x}")
        return {"x": x}

    t0 = time.monotonic()
    values = client.map(shifted_square, range(1000), stdout="none", stderr="none")
    print(f"\nmap of 1,000 calls on a LocalCluster (2 workers x 2 cpus): "
          f"{time.monotonic() - t0:.1f}s")
    assert values == [x * x + 7 for x in range(1000)]

    job = client.submit_function(checked, 3)
    assert job.result() == {"x": 3}
    job = client.submit_map(checked, [1, -2, 5])
    summary = job.wait()
    assert (summary.finished, summary.failed) == (2, 1)
    assert [t.exit_code for t in job.tasks()] == [0, 1, 0]
    assert job.task(0).result() == {"x": 1}
    with pytest.raises(ValueError, match="negative input -2") as info:
        job.task(1).result()
    assert "in checked" in info.value.remote_traceback  # the traceback from the worker
    assert isinstance(info.value.__cause__, hpcqueue.RemoteError)
    with pytest.raises(ValueError):
        job.results()  # the first failed call raises


def test_watch_with_failures_yields_the_tasks_that_fail_for_good(client, tmp_path):
    import select

    job = client.submit(each_line=["exit 3", "true", "exit 4", "sleep 0.5; exit 5"],
                        cwd=tmp_path)
    failed, lists = [], []
    with client.watch(job, interval=0.05, failures=True) as watch:
        assert select.select([watch], [], [], 30)[0] == [watch]  # fileno() for select
        for item in watch:
            if isinstance(item, hpcqueue.Failures):
                assert len(item) > 0
                failed += list(item)
            else:
                lists.append(item)
    assert sorted((f.job, f.id, f.entry, f.exit_code) for f in failed) == [
        (job.id, 0, "exit 3", 3), (job.id, 2, "exit 4", 4), (job.id, 3, "sleep 0.5; exit 5", 5)]
    assert lists[-1] == watch.final and watch.final[0].failed == 3 and watch.final[0].done
    assert watch.fileno() == -1 and list(watch) == []  # closed at the end

    # a watch that begins after the failures hears of them first, then of the end
    items = list(client.watch([job.id], interval=None, failures=True))
    assert sorted(f.id for f in items[0]) == [0, 2, 3]
    assert len(items) == 2 and items[1][0].failed == 3


def test_updates_push_what_changes_until_closed(client, tmp_path):
    import threading

    with client.updates(interval=0.1) as updates:
        first = next(updates)
        assert {"jobs", "workers", "server"} <= set(first)
        job = client.submit("true", cwd=tmp_path)
        for change in updates:
            rows = [j for j in change.get("jobs", ()) if j["id"] == job.id]
            if rows and rows[-1]["state"] == "finished":
                break
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(updates))
        reader.start()
        time.sleep(0.3)
        updates.close()  # from another thread: the reader stops, without an error
        reader.join(10)
        assert not reader.is_alive()
    with pytest.raises(hpcqueue.Refused, match="interval"):
        client.updates(interval="soon")


def test_task_output_tail_and_an_unreadable_file(client, tmp_path):
    job = client.submit("printf 'a\\nb\\nc\\n'", array="1-2", cwd=tmp_path)
    job.wait()
    task = job.task(1)
    assert task.output("stdout", tail=2) == b"b\nc\n" and task.output() == b"a\nb\nc\n"
    with pytest.raises(hpcqueue.UsageError, match="tail must be"):
        task.output(tail=-1)
    path = tmp_path / f"job-{job.id}" / "2.stdout"
    path.unlink()
    path.mkdir()  # a file that cannot be read (even by root)
    with pytest.raises(hpcqueue.OutputUnreadable, match="could not be read") as info:
        job.task(2).output()
    assert info.value.data == b""


def test_the_library_does_not_import_the_command_line():
    import ast
    from pathlib import Path

    root = Path(hpcqueue.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] == "cli" or rel == Path("__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}:{node.lineno} {n}" for n in names
                          if n == "hpcqueue.cli" or n.startswith("hpcqueue.cli.")]
    assert offenders == []


# ------------------------------------------------------------------ docs/api.md

def _doc():
    from pathlib import Path

    return (Path(__file__).parent.parent / "docs" / "api.md").read_text()


def test_docs_api_shows_every_public_method():
    from hpcqueue.watch import Updates, Watch

    text = _doc()
    missing = []
    for cls in (hpcqueue.Client, hpcqueue.Job, hpcqueue.Task, hpcqueue.JobSummary,
                hpcqueue.LocalCluster, Watch, Updates):
        for name, value in vars(cls).items():
            methods = (property, classmethod, staticmethod)
            if name.startswith("_") or name == "from_row" or not (
                    callable(value) or isinstance(value, methods)):
                continue  # (a dataclass field's default is not a method)
            if f".{name}" not in text:
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def test_the_examples_of_docs_api_run(tmp_path, monkeypatch):
    import re

    blocks = re.findall(r"```python\n(.*?)```", _doc(), re.S)
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)
    sim = tmp_path / "sim.sh"
    sim.write_text('#!/bin/sh\necho "sim $HPCQUEUE_TASK_ID $*"\n')
    sim.chmod(0o755)
    for name in ("step.sh", "report.sh"):  # the workflow's stages
        (tmp_path / name).write_text('#!/bin/sh\necho "$0 $HPCQUEUE_TASK_ID"\n')
        (tmp_path / name).chmod(0o755)
    with hpcqueue.LocalCluster(workers=2, cpus=2) as cluster:
        monkeypatch.setenv("HPCQUEUE_SERVER_DIR", str(cluster.server_dir))
        namespace = {"__name__": "__main__"}  # its functions travel by value
        for k, code in enumerate(blocks, 1):
            try:
                exec(compile(code, f"docs/api.md, block {k}", "exec"), namespace)
            except Exception as e:
                pytest.fail(f"block {k} of docs/api.md raised {type(e).__name__}: {e}\n"
                            f"{code}", pytrace=False)
        assert namespace["summary"].finished == 100  # the array of ./sim.sh
        assert namespace["watch"].final[0].failed == 2
        assert namespace["client"].job("last").wait().state == "finished"  # (block 14: not waited)


def test_the_task_options_of_submit(client, tmp_path):
    """`--stdin`, `--max-fails`, `--task-dir` and `--tasks` from Python."""
    job = client.submit("cat; echo", stdin="fed once\n", array="1-2", cwd=tmp_path)
    job.wait()
    assert [t.stdout() for t in job.tasks()] == ["fed once\n\n"] * 2
    job = client.submit("exit 3", array="1-20", max_fails=2, cwd=tmp_path)
    summary = job.wait()
    assert summary.failed >= 2 and summary.canceled > 0 and summary.finished == 0
    job = client.submit('test -d "$HPCQUEUE_TASK_DIR" && echo "$HPCQUEUE_TASK_DIR"',
                        task_dir=True, cwd=tmp_path)
    assert job.wait().ok
    folder = job.task(0).stdout().strip()
    assert folder and not os.path.exists(folder)  # removed after the task
    job = client.submit(each_line=["echo a", "echo b", "echo c", "echo d"], tasks="1,3",
                        cwd=tmp_path)
    job.wait()
    assert [(t.id, t.stdout()) for t in job.tasks()] == [(1, "b\n"), (3, "d\n")]
    with pytest.raises(hpcqueue.UsageError, match="max_fails"):
        client.submit("true", max_fails=0)
    with pytest.raises(hpcqueue.UsageError, match="stdin"):
        client.submit("true", stdin=5)
