"""Dependencies (hpcqueue.deps): jobs that wait for jobs (`submit --depends-on`), tasks that
wait for tasks of their job (`--from-json` elements' `deps`); the checks, the counters in the
state, and workflows on a real server and worker, a kill -9 of the server between stages
included."""

import json
import os
import signal
from datetime import datetime

import pytest

from conftest import one_clear_line, wait_for
from hpcqueue import deps
from hpcqueue.exceptions import UsageError
from hpcqueue.jobspec import make_spec
from hpcqueue.model import IdRanges
from hpcqueue.server.explain import explain_job, explain_task
from hpcqueue.server.specs import check_spec
from hpcqueue.state import ServerState

# ------------------------------------------------------------------ the checks


def test_find_cycle_names_the_cycle_or_none():
    assert deps.find_cycle({2: [0, 1], 3: [2]}) is None
    assert deps.find_cycle({1: [2], 2: [3], 3: [1]}) == [1, 2, 3, 1]
    assert deps.find_cycle({5: [4], 4: [6], 6: [4]}) == [4, 6, 4]
    chain = {k: [k - 1] for k in range(1, 100_000)}  # deep: no recursion limit
    assert deps.find_cycle(chain) is None
    chain[0] = [99_999]
    assert len(deps.find_cycle(chain)) == 100_001


@pytest.mark.parametrize("pairs, needle", [
    ([[0, [1]], [1, [2]], [2, [0]]], "cycle: task 0 -> task 1 -> task 2 -> task 0"),
    ([[1, [1]]], "task 1 depends on itself"),
    ([[1, [7]]], "task 1 depends on task 7, which the job does not have (its task ids are "
                 "0-3)"),
    ([[9, [0]]], "the job has no task 9"),
    ([[1, [0]], [1, [2]]], "task 1 is given dependencies twice"),
    ([[1, "0"]], "[task id, [task ids]] pairs"),
])
def test_bad_task_deps_are_refused_naming_what(pairs, needle):
    with pytest.raises(UsageError, match=None) as e:
        deps.check_task_deps(pairs, IdRanges([[0, 3, 1]]))
    assert needle in str(e.value)


def test_task_deps_are_sorted_and_without_repeats():
    assert deps.check_task_deps([[3, [2, 1, 2]], [1, [0]], [2, []]], IdRanges([[0, 3, 1]])) \
        == [[1, [0]], [3, [1, 2]]]


def test_deps_come_from_json_elements_or_a_mapping():
    items = [json.dumps(x) for x in ({"a": 1}, {"deps": [0]}, [1, "deps"], {"deps": [0, 1]})]
    assert deps.deps_of_items(items) == [[1, [0]], [3, [0, 1]]]
    assert deps.deps_of_items(['{"x": 1}']) is None
    with pytest.raises(UsageError, match="element 0: 'deps' must be a list of task ids"):
        deps.deps_of_items(['{"deps": "1"}'])
    assert deps.deps_of_mapping({2: [0, 1], 3: 2}) == [[2, [0, 1]], [3, [2]]]
    with pytest.raises(UsageError, match="deps must map task ids"):
        deps.deps_of_mapping({"a": [1]})


def spec_of(**opts):
    return make_spec(opts, ["true"], submit_dir="/tmp")


def test_the_options_become_spec_keys_only_when_given():
    plain = spec_of()
    assert not {"after", "after_any", "task_deps"} & set(plain)
    assert spec_of(depends_on="1-3,last")["after"] == "1-3,last"
    assert spec_of(depends_on="2", depends_on_any=True)["after_any"] is True
    assert "after_any" not in spec_of(depends_on="2", depends_on_ok=True)
    for opts, needle in [({"depends_on_any": True}, "--depends-on-any needs --depends-on"),
                         ({"depends_on_ok": True}, "--depends-on-ok needs --depends-on"),
                         ({"depends_on": "1", "depends_on_ok": True, "depends_on_any": True},
                          "cannot be combined"),
                         ({"depends_on": "all"}, "name the jobs to wait for"),
                         ({"depends_on": "x"}, "'x' in 'x' is not a job id")]:
        with pytest.raises(UsageError, match=None) as e:
            spec_of(**opts)
        assert needle in str(e.value)


# ------------------------------------------------------------------ the state


def submit(state, spec, t=1.0):
    job_id = state.next_job_id
    state.apply({"e": "job", "id": job_id, "spec": check_spec(
        {"cmd": ["true"], "ids": [[0, 0, 1]], **spec}), "t": t})
    return state.jobs[job_id]


def run(state, job, idxs, code=0, t=2.0):
    if 1 not in state.workers:
        state.apply({"e": "worker", "id": 1, "info": {"cpus": 64}, "t": 0.0})
    state.apply({"e": "start", "w": 1, "tasks": [job.id, idxs], "t": t})
    state.apply({"e": "done", "w": 1, "t": t + 1, "r": [
        [job.id, i, job.instance(i), code, t, t + 1, None if code == 0 else "exit 1"]
        for i in idxs]})


def test_a_job_waits_for_its_jobs_by_a_counter_and_is_ready_after():
    state = ServerState()
    a, b = submit(state, {}), submit(state, {})
    c = submit(state, {"after": [1, 2], "ids": [[1, 5, 1]]})
    assert c.available == 0 and c.id not in state.ready and c.waiting_on == {1, 2}
    assert [j.id for j in state.after[1]] == [3]
    run(state, a, [0])
    assert c.waiting_on == {2} and c.id not in state.ready
    assert explain_job(c, [], [], state.ready_jobs(), 0.0).message == \
        "waiting for job 2 to end with every task finished"
    run(state, b, [0])
    assert c.available == 5 and c.id in state.ready and not state.after


def test_a_failed_or_canceled_dependency_cancels_the_chain_with_the_reason():
    state = ServerState()
    a = submit(state, {})
    b = submit(state, {"after": [1]})
    c = submit(state, {"after": [2]})
    anyway = submit(state, {"after": [1], "after_any": True})
    run(state, a, [0], code=1)
    assert b.summary()["state"] == "canceled" and b.reason == \
        "canceled: job 1 it depends on failed"
    assert c.reason == "canceled: job 2 it depends on was canceled" and c.ended is not None
    assert anyway.available == 1 and anyway.id in state.ready
    assert b.task_row(0)["error"] == b.reason
    why = explain_task(b, 0, [], [], [], 0.0)
    assert why.message == "the task is canceled, not waiting: " + b.reason
    # a dependency that has failed already cancels a new job at once
    late = submit(state, {"after": [1]})
    assert late.done and late.reason == "canceled: job 1 it depends on failed"
    # and a job canceled by hand cancels its dependants
    d = submit(state, {})
    e = submit(state, {"after": [d.id]})
    state.apply({"e": "cancel", "ids": [d.id], "t": 5.0})
    assert e.reason == f"canceled: job {d.id} it depends on was canceled"


def test_a_long_chain_cancels_without_recursion():
    state = ServerState()
    first = submit(state, {})
    for k in range(2, 3002):
        submit(state, {"after": [k - 1]})
    run(state, first, [0], code=1)
    assert all(state.jobs[k].done for k in range(2, 3002))


def test_tasks_wait_for_tasks_by_counters():
    state = ServerState()
    job = submit(state, {"ids": [[0, 4, 1]], "task_deps": [[1, [0]], [2, [0]],
                                                           [3, [1, 2]], [4, [3]]]})
    assert job.available == 1 and job.take(5) == [0]
    state.apply({"e": "worker", "id": 1, "info": {"cpus": 64}, "t": 0.0})
    state.apply({"e": "start", "w": 1, "tasks": [job.id, [0]], "t": 1.0})
    assert job.id not in state.ready  # nothing else may run: not ready
    why = explain_task(job, 3, [], [], [], 0.0)
    assert (why.reason, why.message) == ("dependency",
                                         "waiting for tasks 1, 2 (of this job) to finish")
    state.apply({"e": "done", "w": 1, "t": 2.0, "r": [[job.id, 0, 0, 0, 1.0, 2.0, None]]})
    assert job.available == 2 and job.id in state.ready and job.unmet == {3: 2, 4: 1}
    assert sorted(job.take(5)) == [1, 2]
    run(state, job, [1])
    assert job.unmet == {3: 1, 4: 1} and job.available == 1  # task 2, taken not started
    run(state, job, [2], code=1)  # fails for good: 3 and, through it, 4 are canceled
    assert job.summary()["state"] == "failed" and job.done
    assert job.errors[3] == "canceled: task 2 it depends on failed"
    assert job.errors[4] == "canceled: task 3 it depends on was canceled (task 2 failed)"


# ------------------------------------------------------------------ on a real server


def times(cluster, job) -> list[tuple[float, float]]:
    """(start, end) of each task of JOB, from `task list --output json` (ISO 8601)."""
    rows = json.loads(cluster.hq("task", "list", str(job), "--output", "json").stdout)
    return [(datetime.fromisoformat(r["start"]).timestamp(),
             datetime.fromisoformat(r["end"]).timestamp()) for r in rows]


STAGE = "test -e {need} || exit 7; sleep {nap}; touch {out}"


def stage(cluster, tmp_path, *options, need="/dev/null", out, nap=0):
    """Submit a stage whose tasks fail (exit 7) if NEED does not exist yet, and then make
    OUT (with %{TASK_ID} in it for arrays)."""
    p = cluster.hq("submit", "--stdout", "none", "--stderr", "none", "--output", "quiet",
                   *options, "--", "sh", "-c",
                   STAGE.format(need=need, out=tmp_path / out, nap=nap).replace(
                       "%{TASK_ID}", "$HPCQUEUE_TASK_ID"))
    return int(p.stdout.strip())


def check_order(cluster, *jobs):
    """Each job's first task started after every task of the job before it ended."""
    for before, after in zip(jobs, jobs[1:]):
        ended = max(t1 for _, t1 in times(cluster, before))
        started = min(t0 for t0, _ in times(cluster, after))
        assert started >= ended - 0.01, (before, after, ended, started)


def test_three_stages_from_the_cli(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "4")
    pre = stage(cluster, tmp_path, out="pre.done", nap=5)
    sims = stage(cluster, tmp_path, "--array", "1-100", "--depends-on", str(pre),
                 need=tmp_path / "pre.done", out="sim-%{TASK_ID}.done")
    reduce = stage(cluster, tmp_path, "--depends-on", "last", need=tmp_path / "sim-100.done",
                   out="reduce.done")
    info = json.loads(cluster.hq("job", "info", str(reduce), "--output", "json").stdout)
    assert info["spec"]["after"] == [sims], info
    assert info["waiting_because"]["message"] == \
        f"waiting for job {sims} to end with every task finished"
    text = cluster.hq("task", "explain", str(reduce), "0").stdout
    assert f"waiting because (dependency): waiting for job {sims}" in text
    p = cluster.hq("job", "wait", f"{pre}-{reduce}", timeout=180)
    assert "100 finished" in p.stdout and p.returncode == 0, p.stdout
    assert len(list(tmp_path.glob("sim-*.done"))) == 100
    check_order(cluster, pre, sims, reduce)
    assert os.path.getmtime(tmp_path / "reduce.done") >= max(
        os.path.getmtime(f) for f in tmp_path.glob("sim-*.done"))


def test_a_failed_stage_cancels_its_dependants_with_the_reason(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    cluster.hq("submit", "--stdout", "none", "--stderr", "none", "--", "sh", "-c",
               "sleep 1; exit 3")
    stage(cluster, tmp_path, "--depends-on", "1", out="two")
    stage(cluster, tmp_path, "--depends-on", "2", out="three")
    stage(cluster, tmp_path, "--depends-on", "1", "--depends-on-any", out="anyway")
    p = cluster.hq("job", "wait", "1-4", check=False, timeout=60)
    assert p.returncode == 1, p.stdout
    two = json.loads(cluster.hq("job", "info", "2", "--output", "json").stdout)
    assert two["state"] == "canceled" and two["reason"] == \
        "canceled: job 1 it depends on failed"
    lines = cluster.hq("job", "info", "2").stdout.splitlines()
    assert any(line.startswith("canceled because") and line.rstrip().endswith(two["reason"])
               for line in lines), lines
    text = cluster.hq("task", "explain", "3", "0").stdout
    assert "canceled: job 2 it depends on was canceled" in text
    assert not (tmp_path / "two").exists() and not (tmp_path / "three").exists()
    assert (tmp_path / "anyway").exists()


def test_a_kill_9_between_stages_and_a_restart_completes_in_order(cluster, tmp_path):
    journal = tmp_path / "journal"
    cluster.start_server("--journal", journal)
    cluster.start_worker("--cpus", "4")
    pre = stage(cluster, tmp_path, out="pre.done")
    sims = stage(cluster, tmp_path, "--array", "1-20", "--depends-on", str(pre),
                 need=tmp_path / "pre.done", out="sim-%{TASK_ID}.done", nap=0.5)
    reduce = stage(cluster, tmp_path, "--depends-on", str(sims),
                   need=tmp_path / "sim-20.done", out="reduce.done")
    wait_for((tmp_path / "pre.done").exists, timeout=30, what="stage 1")
    wait_for(lambda: json.loads(cluster.hq("job", "info", str(pre), "--output",
                                           "json").stdout)["state"] == "finished",
             what="stage 1 ended")
    os.killpg(cluster.server.pid, signal.SIGKILL)  # no goodbye: the journal is all it has
    cluster.server.wait()
    cluster.start_server("--journal", journal)
    info = json.loads(cluster.hq("job", "info", str(reduce), "--output", "json").stdout)
    assert info["state"] == "waiting" and "waiting for job" in \
        info["waiting_because"]["message"]
    cluster.start_worker("--cpus", "4", name="worker2.log")  # the first one left with it
    p = cluster.hq("job", "wait", f"{pre}-{reduce}", timeout=120)
    assert p.returncode == 0, p.stdout
    check_order(cluster, pre, sims, reduce)
    assert (tmp_path / "reduce.done").exists()


def test_cycles_and_unknown_ids_are_refused_at_submit(cluster, tmp_path):
    cluster.start_server()
    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps([{"deps": [2]}, {"deps": [0]}, {"deps": [1]}]))
    p = cluster.hq("submit", "--from-json", cycle, "--", "true", check=False)
    one_clear_line(p, "the task dependencies form a cycle: task 0 -> task 2 -> task 1 -> "
                      "task 0")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{}, {"deps": [5]}]))
    p = cluster.hq("submit", "--from-json", unknown, "--", "true", check=False)
    one_clear_line(p, "task 1 depends on task 5, which the job does not have")
    p = cluster.hq("submit", "--depends-on", "7", "--", "true", check=False)
    one_clear_line(p, "no job 7")
    cluster.hq("submit", "--stdout", "none", "--", "true")
    p = cluster.hq("submit", "--depends-on", "1-3", "--", "true", check=False)
    one_clear_line(p, "no job 2")
    p = cluster.hq("submit", "--depends-on-any", "--", "true", check=False)
    one_clear_line(p, "--depends-on-any needs --depends-on")
    jobs = json.loads(cluster.hq("job", "list", "--output", "json").stdout)
    assert [j["id"] for j in jobs] == [1]  # nothing refused was submitted


def test_a_waiting_dependant_is_no_demand_for_autoalloc():
    from hpcqueue.autoalloc.service import demand_of

    state = ServerState()
    first = submit(state, {"ids": [[0, 2, 1]]})
    second = submit(state, {"after": [first.id], "ids": [[0, 99, 1]]})
    tasks = submit(state, {"ids": [[0, 9, 1]], "task_deps": [[k, [0]] for k in range(1, 10)]})
    assert [(d.job, d.count) for d in demand_of(state)] == [(1, 3), (3, 1)]
    run(state, first, [0, 1, 2])
    run(state, tasks, [0])
    assert [(d.job, d.count) for d in demand_of(state)] == [(2, 100), (3, 9)]
    assert second.id in state.ready
