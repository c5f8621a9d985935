"""Python functions as tasks: specs, the call runner, results kept (and journaled) by the
server, big results in files, remote exceptions; with a real server and workers."""

import os
import subprocess
import sys

import cloudpickle
import msgpack
import pytest
from conftest import wait_for

from hpcqueue import Client, calls, functions
from hpcqueue.access import connect
from hpcqueue.exceptions import HpcqueueError, RemoteError, UsageError
from hpcqueue.state import ServerState

# the workers cannot import this module: its functions travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x):
    return x * x


def fails(x):
    if x > 2:
        raise ValueError(f"bad value {x}")
    return x


class Stubborn(Exception):
    """An exception that pickles but does not unpickle (its __init__ wants two args)."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def raises_stubborn():
    raise Stubborn(1, 2)


def blob(n):
    return b"x" * n


def request(cluster, **message):
    conn = connect(cluster.server_dir)
    try:
        conn.send(message)
        return conn.recv()
    finally:
        conn.close()


def run_call(cluster, spec):
    with Client(cluster.server_dir) as client:
        job = client._submit_spec(spec)
        job.wait()
        return job.id, list(job.result_rows())


# ------------------------------------------------------------------ pure parts


def test_function_spec_carries_the_callable_once_and_a_call_per_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = functions.function_spec(square, range(3), cpus=2, time_limit="1m",
                                   env={"A": "1"}, resources={"gpus": 1})
    assert spec["kind"] == "function" and spec["cmd"] is None
    assert spec["ids"] == [[0, 2, 1]] and len(spec["entries"]) == 3
    assert cloudpickle.loads(calls.decode(spec["function"]))(4) == 16
    assert [cloudpickle.loads(calls.decode(e)) for e in spec["entries"]] == [
        ((0,), {}), ((1,), {}), ((2,), {})]
    assert (spec["cpus"], spec["time_limit"], spec["env"], spec["res"]) == (
        2, 60.0, {"A": "1"}, {"gpus": 1})
    assert spec["name"] == "square" and spec["submit_dir"] == str(tmp_path)
    one = functions.call_spec(square, 7)
    assert cloudpickle.loads(calls.decode(one["entries"][0])) == ((7,), {})


def test_function_spec_refuses_bad_options_clearly():
    with pytest.raises(UsageError, match="unknown option 'cpu'.*cpus"):
        functions.function_spec(square, [1], cpu=2)
    with pytest.raises(UsageError, match="not callable"):
        functions.function_spec(3, [1])
    with pytest.raises(UsageError, match="holds no tasks"):
        functions.function_spec(square, [])
    lock = __import__("threading").Lock()
    with pytest.raises(UsageError, match="cannot pickle the arguments of call 0"):
        functions.call_spec(square, lock)


def test_result_path_is_beside_the_stdout_or_under_the_server_dir():
    assert calls.result_path(3, 7, "/w/job-3/7.stdout", None, "/srv") == "/w/job-3/7.result"
    assert calls.result_path(3, 7, None, "/logs", "/srv") == "/logs/job-3/7.result"
    assert calls.result_path(3, 7, None, None, "/srv") == "/srv/results/job-3/7.result"


def test_callrun_reports_a_value_or_an_exception(tmp_path):
    fn, args, out = (tmp_path / n for n in ("fn", "args", "out"))

    def run(f, *a):
        fn.write_bytes(cloudpickle.dumps(f))
        args.write_bytes(cloudpickle.dumps((a, {})))
        p = subprocess.run([sys.executable, "-m", "hpcqueue.worker.callrun", fn, args, out],
                           capture_output=True, text=True, timeout=60)
        return p.returncode, msgpack.unpackb(out.read_bytes(), raw=False)

    code, outcome = run(square, 5)
    assert code == 0 and cloudpickle.loads(outcome["value"]) == 25
    code, outcome = run(fails, 9)
    assert code == 1 and outcome["type"] == "ValueError"
    assert outcome["message"] == "bad value 9"
    # (a function pickled by value has no source file on the worker: its name and line)
    assert f'line {fails.__code__.co_firstlineno + 2}, in fails' in outcome["traceback"]
    assert "callrun" not in outcome["traceback"]  # the runner's own frame is left out
    assert calls.failure_line(out.read_bytes()) == "ValueError: bad value 9"


def test_results_are_kept_for_the_ended_instance_only_and_replayed():
    spec = {"kind": "function", "function": "AA==", "ids": [[0, 1, 1]],
            "entries": ["AA==", "AA=="], "cpus": 1}
    events = [{"e": "job", "id": 1, "spec": spec, "t": 1.0},
              {"e": "worker", "id": 1, "info": {"cpus": 2}, "t": 1.0},
              {"e": "start", "w": 1, "tasks": [1, [0, 1]], "t": 1.0},
              # task 1's result claims another instance: stale, dropped
              {"e": "done", "w": 1, "r": [[1, 0, 0, 0, 1.0, 2.0, None]],
               "o": [[1, 0, 0, b"zero"], [1, 1, 4, b"stale"]], "t": 2.0},
              {"e": "done", "w": 1, "r": [[1, 1, 0, 1, 1.0, 2.0, "ValueError: x"]],
               "o": [[1, 1, 0, "/big/1.result"]], "t": 2.0}]
    state = ServerState()
    for ev in events:
        state.apply(ev)
    assert state.jobs[1].results == {0: b"zero", 1: "/big/1.result"}
    from hpcqueue.journal import snapshot
    from hpcqueue.state import restore

    again = restore(snapshot.dump(state))
    assert again.jobs[1].results == {0: b"zero", 1: "/big/1.result"}


def test_an_inline_result_over_the_servers_limit_is_written_under_the_server_dir(tmp_path):
    from hpcqueue.exceptions import ProtocolError
    from hpcqueue.jobs import Job
    from hpcqueue.server.results import check_outputs

    jobs = {4: Job(4, {"ids": [[10, 11, 1]], "entries": ["AA==", "AA=="]}, 1.0)}
    rows = check_outputs(jobs, [[4, 0, 0, b"small"], [4, 1, 0, b"y" * 50]], 10, tmp_path)
    path = tmp_path / "results" / "job-4" / "11.result"
    assert rows == [[4, 0, 0, b"small"], [4, 1, 0, str(path)]]
    assert path.read_bytes() == b"y" * 50
    for bad in ([[4, 2, 0, b"x"]], [[4, 0, 0, "relative/path"]], [[4, 0, 0, 3]], [[4, 0]]):
        with pytest.raises(ProtocolError):
            check_outputs(jobs, bad, 10, tmp_path)


# ------------------------------------------------------------------ a real cluster


def test_map_returns_the_values_in_order(cluster, tmp_path, monkeypatch):
    """(tests/test_api.py maps over 1,000 items on a LocalCluster.)"""
    monkeypatch.chdir(tmp_path)
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    with Client(cluster.server_dir) as client:
        assert client.map(square, range(40), stdout="none", stderr="none") == \
            [x * x for x in range(40)]
        assert client.map(square, []) == []
        job = client.submit_function(square, 12)
        assert job.result() == 144 and job.task(0).result() == 144


def test_a_call_that_raises_comes_back_with_its_remote_traceback(cluster, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    job, rows = run_call(cluster, functions.function_spec(fails, [1, 5]))
    assert [r["state"] for r in rows] == ["finished", "failed"]
    assert rows[1]["error"] == "ValueError: bad value 5" and rows[1]["exit_code"] == 1
    assert functions.decode_result(rows[0]) == 1
    with pytest.raises(ValueError, match="bad value 5") as info:
        functions.decode_result(rows[1])
    cause = info.value.__cause__
    assert isinstance(cause, RemoteError) and cause.type_name == "ValueError"
    assert f'line {fails.__code__.co_firstlineno + 2}, in fails' in cause.traceback
    assert info.value.remote_traceback == cause.traceback
    assert f"job {job} task 1" in str(cause) and "remote traceback" in str(cause)
    # an exception that does not unpickle here comes back as the RemoteError itself
    _, rows = run_call(cluster, functions.call_spec(raises_stubborn))
    with pytest.raises(RemoteError, match="Stubborn: 1/2") as info:
        functions.decode_result(rows[0])
    assert "in raises_stubborn" in info.value.traceback
    # a failed call is a failed task: retries run it again
    _, rows = run_call(cluster, functions.function_spec(fails, [3], max_retries=1))
    info = request(cluster, op="task_info", job=_, task=0)
    assert info["task"]["retries"] == 1 and rows[0]["state"] == "failed"


def test_a_result_over_the_limit_goes_to_a_file_and_still_decodes(cluster, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster.start_server("--result-limit", "1000")
    cluster.start_worker()
    job, rows = run_call(cluster, functions.function_spec(blob, [10, 5000]))
    assert "result" in rows[0] and "path" not in rows[0]
    path = rows[1]["path"]
    assert "result" not in rows[1] and path == str(tmp_path / f"job-{job}" / "1.result")
    assert functions.decode_result(rows[1]) == b"x" * 5000
    # a job that keeps no output: under the server dir
    job, rows = run_call(cluster, functions.function_spec(blob, [5000], stdout="none"))
    assert rows[0]["path"] == str(cluster.server_dir / "results" / f"job-{job}" / "0.result")
    assert functions.decode_result(rows[0]) == b"x" * 5000
    os.unlink(rows[0]["path"])
    with pytest.raises(HpcqueueError, match="cannot be read here"):
        functions.decode_result(rows[0])


def test_a_restarted_server_keeps_the_results(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    journal = tmp_path / "journal"
    cluster.start_server("--journal", journal, "--result-limit", "100")
    cluster.start_worker("--on-server-lost", "reconnect")
    job, _ = run_call(cluster, functions.function_spec(blob, [3, 500], stdout="none"))
    for compact in (False, True):  # replayed from the events, then from a snapshot
        if compact:
            cluster.hq("journal", "compact")
        cluster.hq("server", "stop")
        cluster.server.wait(timeout=20)
        cluster.start_server("--journal", journal)
        with Client(cluster.server_dir) as client:
            rows = list(client.job(job).result_rows())
        assert [functions.decode_result(r) for r in rows] == [b"xxx", b"x" * 500]
        assert "path" in rows[1]


def test_a_malformed_function_spec_gets_a_clear_error_and_the_server_serves_on(
        cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cluster.start_server()
    good = functions.call_spec(square, 3)
    cases = [
        ({"function": None}, "needs 'function'"),
        ({"function": "not base64!"}, "'function' must be base64 text"),
        ({"entries": ["%%%"]}, "'entries'[0] must be base64 text"),
        ({"entries": [calls.encode(b"x" * (calls.MAX_CALL_BYTES + 1))]},
         "more than the 1,048,576 a job may carry"),
        ({"cmd": ["true"]}, "takes no 'cmd'"),
        ({"open": True, "entries": [], "ids": []}, "cannot be open"),
        ({"entries": [7]}, "'entries' must be a list of strings"),
    ]
    for change, needle in cases:
        reply = request(cluster, op="submit", spec={**good, **change})
        assert reply["ok"] is False, change
        assert needle in reply["error"] and "\n" not in reply["error"], reply["error"]
    reply = request(cluster, op="submit", spec={"cmd": ["true"], "ids": [[0, 0, 1]]})
    assert reply["ok"]
    reply = request(cluster, op="task_results", job=reply["job"])
    assert not reply["ok"] and "not a job of Python calls" in reply["error"]
    cluster.start_worker()
    _, rows = run_call(cluster, good)
    assert functions.decode_result(rows[0]) == 9
