"""Fuzzing the server's edges: nothing from the network may poison the journal.

A request either gets a reply or is refused with an HpcqueueError (and then
changes nothing); a worker's message either is taken or drops that worker
with a ProtocolError.  Either way every event recorded applies, and replaying
the recorded events (packed and unpacked as the journal does) into a fresh
state gives the same jobs, tasks, workers and queues: no poison event.

Everything runs in process: a Core with a few jobs, workers and an allocation
queue, fake connections that keep what is sent, and no network.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import time
from dataclasses import fields
from unittest import mock

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hpcqueue.autoalloc import backends
from hpcqueue.autoalloc import handlers as alloc_handlers  # registers the alloc_* handlers
from hpcqueue.autoalloc.model import QueueParams
from hpcqueue.exceptions import ConnectionLost, HpcqueueError, ProtocolError, RequestError
from hpcqueue.jobs import EXIT_MAX, MAX_CRASH_LIMIT, MAX_RETRIES
from hpcqueue.model import MAX_COUNT, MAX_SECONDS, MAX_TASK_ID, WAITING
from hpcqueue.server import workers as worker_side
from hpcqueue.server.core import Core, Peer
from hpcqueue.server.handlers import HANDLERS
from hpcqueue.server.specs import check_spec
from hpcqueue.server.results import check_outputs
from hpcqueue.state import ServerState

FUZZ = settings(max_examples=25, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ values off the wire


def wire(value):
    """`value` as the server gets it: packed by a peer, unpacked by the protocol."""
    return msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False,
                           strict_map_key=False)


#: values that broke, or could break, a check: wrong types, column edges, non-finite floats
SPECIAL = [
    None, True, False, 0, -1, 1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -(2**31) - 1,
    2**63, 2**64 - 1, -(2**63), 0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf"),
    "", "last", "all", "running", "stdout", "1.1", "\0", "%{NOPE}", "%{CWD}", "A=B", b"\x00",
    [], [[]], [1], [[1]], [1, [0]], [[0, 2**64 - 1, 1]], [[5, 1, 1]], [[0, 9, 0]], {}, {"a": 1},
    {1: 2}, {"": ""}, {"gpus": -1}, {"gpus": True}, {"hostname": "x"},
    # and some that are fine in many places, so that odd requests also get through
    2, 3, 10, 100, 3600.0, "failed", "waiting", "q1", "slurm", "gpus", [1, 2], ["running"],
    {"gpus": 1}, {"B": "2"}, [[0, 4, 2]],
    msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0),
]
leaves = (st.sampled_from(SPECIAL).map(copy.deepcopy) | st.none() | st.booleans()
          | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
          | st.text(max_size=8) | st.binary(max_size=4))
values = st.recursive(
    leaves,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner,
                                     max_size=4)),
    max_leaves=8)


def paths(value, prefix=()):
    """Every place inside `value` (a map or list) that a mutation can replace."""
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, inner in items:
        if prefix == () and key == "op":
            continue
        yield prefix + (key,)
        yield from paths(inner, prefix + (key,))


def mutate(data, valid):
    """`valid` with one to three places replaced by odd values, or map keys dropped."""
    out = copy.deepcopy(valid)
    for _ in range(data.draw(st.sampled_from([1, 1, 1, 2, 3]), label="mutations")):
        where = list(paths(out))
        if not where:
            break
        path = data.draw(st.sampled_from(where), label="path")
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and data.draw(st.booleans(), label="drop"):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(values, label="value")
    return out


# ------------------------------------------------------------------ an in-process server


class FakeWriter:
    def __init__(self):
        self.sent = []

    def write(self, data):
        self.sent.append(data)

    def close(self):
        pass


class FakeSession:
    """Seals a message the way the protocol packs it, so an unpackable reply fails here."""

    def seal(self, message):
        return msgpack.packb(message, use_bin_type=True)


class FakeTransport:
    async def submit(self, scheduler, script, cwd, hold=False):
        return "dry-run" if hold else "100"

    async def status(self, scheduler, job_ids):
        return {}

    async def cancel(self, scheduler, job_ids):
        pass


class FakeAutoAlloc:
    def __init__(self, server_dir):
        self.server_dir = server_dir
        self.transport = FakeTransport()
        self.status_errors = {}
        self.probes = {}

    def backend(self, params):
        return backends.scheduler(params.scheduler), self.transport

    async def probe(self, params):
        return "probed"

    def probe_arrived(self, token, hostname):
        self.probes.setdefault(token, []).append(hostname)

    def poke(self):
        pass

    async def cancel_all(self, q):
        return [a.id for a in q.live()]


SPEC = {
    "name": "sim", "kind": "array", "cmd": ["./sim.sh", "--fast"], "shell": False,
    "ids": [[1, 10, 1]], "entries": None, "cpus": 1, "res": {}, "priority": 0,
    "max_retries": 1, "crash_limit": 5, "time_limit": 60.0, "time_request": None,
    "retry_delay": [0.5, 2.0], "retry_timeout": 600.0,
    "stdout": "%{CWD}/job-%{JOB_ID}/%{TASK_ID}.stdout", "stderr": "none", "cwd": None,
    "env": {"OMP_NUM_THREADS": "1"}, "submit_dir": "/home/u/project",
}
LINES_SPEC = dict(SPEC, name="lines", kind="lines", cmd=None, shell=True,
                  ids=[[0, 2, 1]], entries=["echo a", "echo b", "exit 3"], max_retries=0,
                  retry_delay=None, retry_timeout=None)
GPU_SPEC = dict(SPEC, name="gpu", ids=[[0, 99, 3], [200, 200, 1]], res={"gpus": 1},
                priority=5, time_request=30)
#: `submit --each-line -` from a pipe: an open job that grows (job 4 of the server below)
OPEN_SPEC = dict(LINES_SPEC, name="stream", ids=[[0, 1, 1]], entries=["echo 1", "exit 2"],
                 open=True)
#: a job of Python calls (job 5): its callable and each call's arguments as base64
FUNCTION_SPEC = dict(SPEC, name="calls", kind="function", cmd=None, ids=[[0, 2, 1]],
                     entries=["gAQu", "gAQu", "gAQu"], function="gASVAAAA", max_retries=0,
                     retry_delay=None, retry_timeout=None, stdout="none", priority=10)
#: tasks that wait for tasks of their job (job 6), and a job that waits for jobs 2 and 6 (job 7)
DEPS_SPEC = dict(SPEC, name="deps", kind="json", ids=[[0, 3, 1]],
                 entries=["{}", "{}", "{}", "{}"], max_retries=0, retry_delay=None,
                 retry_timeout=None, task_deps=[[1, [0]], [2, [0]], [3, [1, 2]]])
AFTER_SPEC = dict(LINES_SPEC, name="after", after=[2, 6])
PARAMS = QueueParams(scheduler="slurm", time_limit=3600.0, name="q1", partition="cpu",
                     cpus=4, gpus=1, mem="4G", env={"A": "1"}, modules=["gcc"],
                     extra_args=["--exclusive"]).to_dict()
INFO = {"hostname": "node1", "pid": 4242, "cpus": 4, "res": {"gpus": 2}, "remaining": 7200.0,
        "version": "0.1", "idle_timeout": 300.0, "time_limit": 3600.0, "alloc": "1.1"}


class Server:
    """A Core with jobs, workers (some connected) and a queue; it keeps every recorded
    event packed, as the journal writes it."""

    def __init__(self, server_dir):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.core = core = Core(ServerState())
        self.journal: list[bytes] = []
        apply = core.record

        def record(event):
            self.journal.append(msgpack.packb(event, use_bin_type=True))
            apply(event)

        core.record = record
        core.autoalloc = FakeAutoAlloc(server_dir)
        self.run(HANDLERS["alloc_add"](core, {"params": PARAMS, "dry_run": False}))
        core.record({"e": "alloc_new", "queue": 1, "id": "1.1", "job_id": "100",
                     "dir": str(server_dir / "1.1"), "workers": 1, "t": time.time()})
        for spec in (SPEC, LINES_SPEC, GPU_SPEC, OPEN_SPEC, FUNCTION_SPEC, DEPS_SPEC,
                     AFTER_SPEC):
            core.submit(check_spec(spec))
        for wid in (1, 2):
            core.live[wid] = self.peer()
            core.record({"e": "worker", "id": wid, "t": time.time(),
                         "info": worker_side._check_info(dict(INFO, cpus=wid + 1))})
        core.record({"e": "worker", "id": 3, "info": {"cpus": 1}, "t": time.time()})
        self.settle()  # a dispatch round
        rows = self.results(1, [0, 1, 3])
        core.record({"e": "done", "w": 1, "t": time.time(), "r": rows,
                     "o": self.outputs(rows)})
        self.settle()

    @staticmethod
    def peer():
        return Peer(None, FakeWriter(), FakeSession(), ("fuzz", 0))

    def run(self, result):
        return self.loop.run_until_complete(result) if inspect.isawaitable(result) else result

    def settle(self):
        """Let scheduled dispatch rounds run."""
        self.loop.run_until_complete(asyncio.sleep(0))

    def results(self, wid, codes):
        """Valid result rows for the first tasks running on worker `wid`."""
        state = self.core.state
        rows = []
        for (job_id, i), code in zip(sorted(state.workers[wid].tasks), codes):
            now = time.time()
            rows.append([job_id, i, state.jobs[job_id].instance(i), code, now - 1, now,
                         f"exit code {code}" if code else None])
        return rows

    def outputs(self, rows):
        """Results (`o`) for the rows of function tasks among ROWS."""
        jobs = self.core.state.jobs
        return [[r[0], r[1], r[2], b"outcome %d" % r[3]] for r in rows
                if jobs[r[0]].spec.get("kind") == "function"]

    def close(self):
        self.loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("server")


@pytest.fixture
def server(server_dir):
    s = Server(server_dir)
    yield s
    s.close()


def observable(state: ServerState):
    """What must survive a replay, as plain comparable values."""
    jobs = {}
    for job_id, j in state.jobs.items():
        columns = None
        if j.state is not None:
            columns = [bytes(c) for c in (j.state, j.starts, j.crashes, j.retries, j.exit,
                                          j.worker, j.t0, j.t1)]
        # dispatch pops the requeued queue outside apply: compare what still waits in it
        # (and not a delayed retry: replay can leave such an index in it, never handed out)
        requeued = sorted({i for i in j.requeued if (j.state is None or j.state[i] == WAITING)
                           and i not in j.retry_at})
        jobs[job_id] = (repr(j.spec), j.n, j.cursor, list(j.counts), columns, dict(j.errors),
                        j.canceled, j.submitted, repr(j.ended), j.cpus, j.res, j.priority,
                        repr(j.time_request), j.crash_limit, j.max_retries,
                        repr(j.mean_runtime), requeued, j.open, repr(j.ids.ranges),
                        repr(j.entries), j.retry_delay, j.retry_timeout,
                        sorted(j.retry_at.items()), sorted(j.failed_since.items()),
                        sorted(j.results.items()), sorted(j.waiting_on),
                        sorted(j.unmet.items()), j.reason)
    delayed = sorted(e for e in state.delayed
                     if e[1] in state.jobs and state.jobs[e[1]].retry_at.get(e[2]) == e[0])
    workers = {w.id: (repr(w.info), w.connected, w.state, w.ended, w.reason, w.cpus, w.res,
                      w.used_cpus, w.used_res, sorted(w.tasks), repr(w.deadline), w.finished)
               for w in state.workers.values()}
    queues = {q.id: (repr(q.params.to_dict()), q.state, q.pause_reason, q.faults_in_row,
                     q.submit_failures, q.last_error, repr(list(q.edits)),
                     {a.id: (a.state, a.job_id, sorted(a.workers), sorted(a.live_workers),
                             a.started, a.ended, a.reason, a.fault, a.worker_cpus, a.used,
                             a.first_task, a.last_task)
                      for a in q.allocations.values()})
              for q in state.alloc.queues.values()}
    # the jobs each job's end releases (a job canceled while it waited is skipped there)
    after = sorted((dep, j.id) for dep, waiting in state.after.items() for j in waiting
                   if not j.done)
    return (jobs, workers, queues, sorted(state.ready), state.next_job_id,
            state.next_worker_id, state.alloc.next_queue_id, delayed, after)


def assert_replays(server: Server):
    """Every recorded event applies to a fresh state and arrives at the live one."""
    fresh = ServerState()
    for packed in server.journal:
        fresh.apply(msgpack.unpackb(packed, raw=False, strict_map_key=False))
    assert observable(fresh) == observable(server.core.state)
    assert_sane(server.core.state)


def handle(server: Server, request: dict):
    """Run one request as the server does; returns (reply or None, error or None)."""
    op = request["op"]
    before = len(server.journal), observable(server.core.state)
    try:
        reply = server.run(HANDLERS[op](server.core, request))
    except HpcqueueError as e:
        assert (len(server.journal), observable(server.core.state)) == before, \
            f"{op} refused {request!r} ({e}) but changed the state"
        return None, e
    assert isinstance(reply, dict), f"{op} replied {reply!r}"
    FakeSession().seal({"ok": True, **reply})  # the reply must go over the wire,
    json.dumps(reply, allow_nan=False, default=str)  # and be JSON for `--output json`
    return reply, None


def assert_sane(state: ServerState):
    """The state holds only what its columns, the dispatch and the workers can take."""
    for job in state.jobs.values():
        spec = job.spec
        json.dumps(spec, allow_nan=False)  # no NaN, no bytes, no odd msgpack types
        assert 0 <= spec["max_retries"] <= MAX_RETRIES, spec
        assert 1 <= spec["crash_limit"] <= MAX_CRASH_LIMIT, spec
        low, high = spec["retry_delay"] or (1, 1)
        assert 0 < low <= high <= MAX_SECONDS, spec
        assert spec["retry_timeout"] is None or 0 < spec["retry_timeout"] <= MAX_SECONDS, spec
        assert type(job.cpus) is int and 1 <= job.cpus <= MAX_COUNT, spec
        assert type(job.priority) is int and abs(job.priority) <= MAX_COUNT, spec
        assert all(type(v) is int and 0 <= v <= MAX_COUNT for v in job.res.values()), spec
        assert 0 <= job.time_request <= MAX_SECONDS, spec
        assert all(0 <= a <= b <= MAX_TASK_ID for a, b, _ in job.ids.ranges), spec
        # dependencies: resolved job ids (never a selector), of jobs submitted before it
        assert all(type(d) is int and 1 <= d < job.id for d in spec.get("after", ())), spec
        assert not (job.waiting_on and job.id in state.ready), spec
        assert all(k > 0 and job.task_state(i) == WAITING for i, k in job.unmet.items()), spec
    for w in state.workers.values():
        json.dumps(w.info, allow_nan=False)
        assert type(w.cpus) is int and 1 <= w.cpus <= MAX_COUNT, w.info
        assert all(type(v) is int and 0 <= v <= MAX_COUNT for v in w.res.values()), w.info
    for q in state.alloc.queues.values():
        json.dumps(q.params.to_dict(), allow_nan=False)


# ------------------------------------------------------------------ requests

VALID = {
    "submit": [{"spec": SPEC}, {"spec": LINES_SPEC}, {"spec": GPU_SPEC}, {"spec": OPEN_SPEC},
               {"spec": dict(DEPS_SPEC, after="1-2,last", after_any=True)},
               {"spec": dict(AFTER_SPEC, after=[1, 7])},
               {"spec": dict(OPEN_SPEC, ids=[], entries=[])}],
    "append": [{"job": 4, "entries": ["echo 3", "echo 4"]}, {"job": 4, "entries": []},
               {"job": "last", "entries": ["x"]}],
    "close": [{"job": 4}, {"job": 1}],
    "jobs": [{"filter": ["running", "waiting"]}, {}, {"jobs": "1-2,last", "after": 1,
                                                       "limit": 1}],
    "job_info": [{"job": 1}, {"job": "last"}, {"job": "2"}],
    "cancel": [{"jobs": [1, 3]}, {"jobs": "all"}, {"jobs": 2}, {"jobs": "1-3,last"}],
    "tasks": [{"job": 1, "filter": ["failed", "running"]}, {"job": 3},
              {"job": "last", "tasks": "1-5,200", "after": 2, "limit": 3}],
    "task_info": [{"job": 1, "task": 2}, {"job": 3, "task": 200}],
    "task_explain": [{"job": 1, "task": 2}, {"job": 3, "task": 200}, {"job": "last", "task": 0}],
    "failed": [{"job": 2}],
    "task_results": [{"job": 5}, {"job": 5, "tasks": "0-1", "after": 1, "limit": 1}],
    "cat": [{"job": 1, "stream": "stdout", "task": 1}, {"job": 2, "stream": "stdout"}],
    "workers": [{"all": True}, {}],
    "worker_info": [{"worker": 1}],
    "worker_stop": [{"workers": [1]}, {"workers": "all"}],
    "server_info": [{}],
    "journal_flush": [{}],
    "alloc_add": [{"params": dict(PARAMS, name="q2"), "dry_run": False},
                  {"params": dict(PARAMS, name="q3", scheduler="pbs"), "dry_run": True}],
    "alloc_list": [{"all": True}],
    "alloc_info": [{"queue": 1}, {"queue": "q1"}],
    "alloc_edit": [{"queue": 1, "changes": {"backlog": 3, "idle_timeout": 60.0}},
                   {"queue": "q1", "changes": {"time_limit": 7200.0, "max_worker_count": 8},
                    "dry_run": True},
                   {"queue": 1, "changes": {"pause_after": 5, "keep_dirs": 0},
                    "dry_run": False}],
    "alloc_pause": [{"queue": 1}],
    "alloc_resume": [{"queue": "q1"}],
    "alloc_remove": [{"queue": 1, "force": True}, {"queue": "q1"}],
    "alloc_explain": [{"queue": 1}],
    "alloc_log": [{"alloc": "1.1", "stream": "script"}],
    "alloc_efficiency": [{"queue": 1}, {}],
    "alloc_probe": [{"token": "0123abcd", "hostname": "n1"}],
    # last: it drops the jobs the requests above use
    "forget": [{"jobs": [1]}, {"jobs": "1-2"}, {"jobs": "all"}],
}


def test_every_handler_has_valid_requests_here(server):
    assert set(VALID) == set(HANDLERS), "add valid requests for new handlers to VALID"
    for op, requests in VALID.items():
        for request in requests:
            reply, error = handle(server, wire({"op": op, **request}))
            assert error is None or op == "journal_flush", (op, error)
    assert_replays(server)


def fuzzed_request(op: str, data) -> dict:
    """A valid request of `op`, one with odd values in places, or one of odd values only."""
    how = data.draw(st.sampled_from(["valid", "mutated", "mutated", "random"]), label="how")
    if how != "random":
        base = {"op": op, **data.draw(st.sampled_from(VALID[op]), label="valid")}
        return mutate(data, base) if how == "mutated" else base
    keys = sorted({key for r in VALID[op] for key in r}) + ["x"]
    request = data.draw(st.fixed_dictionaries({}, optional=dict.fromkeys(keys, values)),
                        label="random")
    return {**request, "op": op}


@pytest.mark.parametrize("op", sorted(HANDLERS))
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_requests_are_answered_or_refused_and_replay(server_dir, op, data):
    server = Server(server_dir)
    try:
        for _ in range(data.draw(st.integers(1, 3), label="requests")):
            request = wire(fuzzed_request(op, data))
            _, error = handle(server, request)
            event("refused" if error else "answered")  # --hypothesis-show-statistics
            server.settle()
        assert_replays(server)
    finally:
        server.close()


def test_queue_params_are_all_checked():
    assert set(alloc_handlers.PARAM_CHECKS) == {f.name for f in fields(QueueParams)}


# ------------------------------------------------------------------ worker messages


def valid_message(server: Server, wid: int, data) -> dict:
    state = server.core.state
    running = sorted(state.workers[wid].tasks) if wid in state.workers else []
    kind = data.draw(st.sampled_from(["done", "back", "hb"]), label="kind")
    if kind == "done":
        codes = data.draw(st.lists(st.sampled_from([0, 1, -9, 2**31, -(2**31) - 1, 2**63]),
                                   min_size=1, max_size=4), label="codes")
        rows = server.results(wid, codes) or [[1, 0, 0, 0, 1.0, 2.0, None]]
        out = server.outputs(rows)
        return {"op": "done", "r": rows, "o": out} if out else {"op": "done", "r": rows}
    if kind == "back":
        tasks = []
        for job_id, i in running[:data.draw(st.integers(1, 3), label="back")]:
            tasks += [job_id, [i]]
        return {"op": "back", "tasks": tasks or [1, [0]]}
    return {"op": "hb"}


def run_session(server: Server, hello: dict, next_message) -> Peer:
    """A worker connection as the server runs it, with messages from `next_message`."""
    peer = server.peer()

    async def read_message(reader, session):
        await asyncio.sleep(0)  # lets dispatch rounds run between messages
        message = next_message(peer.worker_id)
        if message is None:
            raise ConnectionLost("the worker closed the connection")
        return wire(message)

    async def session():
        with mock.patch.object(worker_side, "read_message", read_message):
            try:
                await worker_side.worker_session(server.core, peer, hello, 1.0)
            except ProtocolError as e:  # as the server's connection handler does
                if peer.worker_id is not None:
                    server.core.worker_gone(peer.worker_id, str(e), crash=True)

    server.loop.run_until_complete(session())
    server.settle()
    return peer


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_worker_messages_are_taken_or_drop_the_worker_and_replay(server_dir, data):
    server = Server(server_dir)
    try:
        hello = {"op": "worker_hello", "info": dict(INFO)}
        if data.draw(st.integers(0, 3), label="odd hello") == 0:
            hello = mutate(data, hello)
        left = data.draw(st.integers(0, 6), label="messages")

        def next_message(wid):
            nonlocal left
            if left == 0:
                return data.draw(st.sampled_from([None, {"op": "bye", "reason": "idle"}]),
                                 label="end")
            left -= 1
            how = data.draw(st.sampled_from(["valid", "valid", "mutated", "random"]),
                            label="how")
            if how == "random":
                return data.draw(
                    values | st.fixed_dictionaries(
                        {"op": st.sampled_from(["done", "back", "bye", "hb", "x"])},
                        optional={"r": values, "o": values, "tasks": values,
                                  "reason": values}),
                    label="message")
            message = valid_message(server, wid, data)
            return mutate(data, message) if how == "mutated" else message

        peer = run_session(server, wire(hello), next_message)
        w = server.core.state.workers.get(peer.worker_id)
        event(f"worker {w.state.value if w else 'refused'}, "
              f"finished {w.finished if w else 0} task(s)")
        assert_replays(server)
    finally:
        server.close()


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.data())
def test_result_and_task_lists_are_refused_or_apply(server_dir, data):
    """The checks alone, on more inputs: ProtocolError, or events that apply and replay."""
    server = Server(server_dir)
    try:
        check_rows_or_tasks(server, data)
        assert_replays(server)
    finally:
        server.close()


def check_rows_or_tasks(server, data):
    core = server.core
    wid = data.draw(st.sampled_from([1, 2, 3, 99]), label="worker")
    if data.draw(st.booleans(), label="results"):
        valid = server.results(1, [0, 5, 2**31]) or [[1, 0, 0, 0, 1.0, 2.0, None]]
        rows = wire(mutate(data, valid) if data.draw(st.booleans()) else data.draw(values))
        valid_out = [[5, 0, 0, b"x"], [5, 2, 0, "/results/2.result"]]
        out = wire(mutate(data, valid_out) if data.draw(st.booleans()) else data.draw(values))
        try:
            ev = {"e": "done", "w": wid, "r": worker_side._check_results(core, rows),
                  "o": check_outputs(core.state.jobs, out, 4, None)}
        except ProtocolError:
            return
    else:
        valid = [1, [0, 1], 3, [0]]
        tasks = wire(mutate(data, valid) if data.draw(st.booleans()) else data.draw(values))
        try:
            ev = {"e": "back", "w": wid, "tasks": worker_side._check_tasks(core, tasks)}
        except ProtocolError:
            return
    core.record(dict(ev, t=time.time()))


@settings(max_examples=150, deadline=None, database=None)
@given(info=values | st.dictionaries(st.sampled_from(sorted(INFO)), values, max_size=4))
def test_worker_hello_info_is_refused_or_registers(server_dir, info):
    server = Server(server_dir)
    try:
        try:
            info = worker_side._check_info(wire(info))
        except ProtocolError:
            return
        server.core.record({"e": "worker", "id": 50, "info": info, "t": time.time()})
        assert_replays(server)
    finally:
        server.close()


# ------------------------------------------------------------------ the regressions, plainly


def refused(server, request, field):
    reply, error = handle(server, wire(request))
    assert isinstance(error, RequestError), (request, reply)
    assert f"'{field}" in str(error), str(error)
    assert "Traceback" not in str(error)
    return error


def test_max_retries_beyond_the_byte_column_is_refused(server):
    refused(server, {"op": "submit", "spec": dict(SPEC, max_retries=300)}, "max_retries")
    reply, _ = handle(server, {"op": "submit", "spec": dict(SPEC, max_retries=255)})
    assert reply["tasks"] == 10
    assert_replays(server)


@pytest.mark.parametrize("field,value", [
    ("crash_limit", 256), ("crash_limit", 0), ("cpus", True), ("cpus", 0), ("cpus", 2**31),
    ("priority", 2**63), ("time_limit", float("nan")), ("time_request", float("inf")),
    ("time_limit", -1), ("time_limit", True), ("env", {"A": 1}), ("env", {"A B": "x"}),
    ("res", {"gpus": True}), ("res", {"gpus": 2**40}), ("res", {"cpus": 1}),
    ("stdout", "%{NOPE}/x"), ("cwd", "%{CWD}/x"), ("cwd", "/a\0b"), ("shell", "yes"),
    ("retry_delay", [2.0, 1.0]), ("retry_delay", [0, 1]), ("retry_delay", [1.0]),
    ("retry_delay", 5), ("retry_delay", [1, float("inf")]), ("retry_delay", [True, 2]),
    ("retry_timeout", 0), ("retry_timeout", float("nan")), ("retry_timeout", 2e9),
    ("retry_timeout", "1h"),
    ("ids", [[0, 2**64 - 1, 1]]), ("ids", [[1, 5, 1], [3, 8, 1]]), ("ids", [[True, 2, 1]]),
    ("ids", [[0, 9, 1]] * 2), ("entries", ["a"]), ("cmd", [1]), ("name", 5),
])
def test_bad_spec_fields_are_refused_by_name(server, field, value):
    error = refused(server, {"op": "submit", "spec": dict(SPEC, **{field: value})},
                    field.split(".")[0])
    assert field in str(error)


def test_spec_is_stored_with_known_keys_only(server):
    reply, _ = handle(server, wire({"op": "submit", "spec": dict(
        SPEC, ids=[[20, 29, 1], [1, 10, 3]], extra={"x": [1, 2]}, res={"gpus": 0, "mem": 2})}))
    job = server.core.state.jobs[reply["job"]]
    assert "extra" not in job.spec and job.spec["ids"] == [[1, 10, 3], [20, 29, 1]]
    assert job.res == {"mem": 2}  # a worker without gpus is not told of a gpus=0 need
    assert list(job.ids)[:5] == [1, 4, 7, 10, 20]
    assert_replays(server)


@pytest.mark.parametrize("request_,field", [
    ({"op": "jobs", "filter": 5}, "filter"),
    ({"op": "jobs", "filter": ["sleeping"]}, "filter"),
    ({"op": "tasks", "job": 1, "filter": "running"}, "filter"),
    ({"op": "worker_info", "worker": [1]}, "worker"),
    ({"op": "worker_info", "worker": True}, "worker"),
    ({"op": "worker_stop", "workers": [[1]]}, "workers"),
    ({"op": "worker_stop", "workers": 5}, "workers"),
    ({"op": "job_info", "job": [1]}, "job"),
    ({"op": "job_info", "job": True}, "job"),
    ({"op": "cancel", "jobs": [[1]]}, "jobs"),
    ({"op": "cancel", "jobs": "3-1"}, "jobs"),
    ({"op": "forget", "jobs": {}}, "jobs"),
    ({"op": "job_info", "job": "1-3"}, "job"),
    ({"op": "tasks", "job": 1, "tasks": [1, 2]}, "tasks"),
    ({"op": "tasks", "job": 1, "tasks": "x"}, "tasks"),
    ({"op": "tasks", "job": 1, "limit": 0}, "limit"),
    ({"op": "jobs", "after": -1}, "after"),
    ({"op": "task_info", "job": 1, "task": {}}, "task"),
    ({"op": "cat", "job": 1, "stream": ["stdout"]}, "stream"),
    ({"op": "workers", "all": "yes"}, "all"),
    ({"op": "alloc_info", "queue": [1]}, "queue"),
    ({"op": "alloc_pause", "queue": True}, "queue"),
    ({"op": "alloc_remove", "queue": 1, "force": "yes"}, "force"),
    ({"op": "alloc_add", "params": dict(PARAMS, name="q9", backlog=2**40)}, "backlog"),
    ({"op": "alloc_add", "params": dict(PARAMS, name="q9", time_limit=float("inf"))},
     "time_limit"),
    ({"op": "alloc_add", "params": dict(PARAMS, name="q9", env={"A;B": "x"})}, "env"),
    ({"op": "alloc_add", "params": dict(PARAMS, name="q9", scheduler="lsf")}, "scheduler"),
    ({"op": "alloc_add", "params": {"scheduler": "slurm"}}, "time_limit"),
    ({"op": "alloc_log", "alloc": "1.1", "stream": {}}, "stream"),
])
def test_malformed_requests_get_an_error_naming_the_field(server, request_, field):
    refused(server, request_, field)


def test_exit_codes_beyond_the_column_are_clamped_and_replay(server):
    rows = server.results(2, [2**31, -(2**31) - 5])
    assert len(rows) == 2
    checked = worker_side._check_results(server.core, wire(rows))
    assert [r[3] for r in checked] == [EXIT_MAX, -(2**31)]
    sent = []

    def next_message(wid):  # a new worker reports 2**31 for the task dispatch gave it, leaves
        sent.append({"op": "done", "r": server.results(wid, [2**31])} if not sent
                    else {"op": "bye"})
        return sent[-1]

    peer = run_session(server, {"op": "worker_hello", "info": {"cpus": 1}}, next_message)
    (job_id, i, *_), = sent[0]["r"]
    assert server.core.state.jobs[job_id].exit[i] == EXIT_MAX
    assert server.core.state.workers[peer.worker_id].state.value == "stopped"
    assert_replays(server)


@pytest.mark.parametrize("message", [
    {"op": "done", "r": [[[1], 0, 0, 0, 1.0, 2.0, None]]},
    {"op": "done", "r": [[{}, 0, 0, 0, 1.0, 2.0, None]]},
    {"op": "done", "r": [[1, 0, 0, 0, float("nan"), 2.0, None]]},
    {"op": "done", "r": [[1, 0, 0, 0, 1.0, float("inf"), None]]},
    {"op": "done", "r": [[1, True, 0, 0, 1.0, 2.0, None]]},
    {"op": "done", "r": [[1, 0, 0, 0.5, 1.0, 2.0, None]]},
    {"op": "done", "r": [[1, 0, 0, 0, 1.0, 2.0, 5]]},
    {"op": "back", "tasks": [[1], [0]]},
    {"op": "back", "tasks": [{}, [0]]},
    {"op": "back", "tasks": [1, [[0]]]},
    {"op": "back", "tasks": [1, [10**6]]},
])
def test_malformed_worker_messages_drop_only_that_worker(server, message):
    messages = iter([message, {"op": "hb"}])
    peer = run_session(server, {"op": "worker_hello", "info": {"cpus": 2}},
                       lambda wid: next(messages, None))
    assert server.core.state.workers[peer.worker_id].state.value == "lost"
    assert server.core.state.workers[1].state.value == "running"
    assert_replays(server)


@pytest.mark.parametrize("info", [
    {"cpus": 2**40}, {"cpus": True}, {"remaining": float("nan")}, {"remaining": -5},
    {"res": {"gpus": True}}, {"res": {"gpus": 2**63}}, {"res": {1: 2}}, {"pid": "x"},
    {"time_limit": float("inf")}, [],
])
def test_malformed_hellos_are_refused(server, info):
    with pytest.raises(ProtocolError):
        worker_side._check_info(wire(info))


# ------------------------------------------------------------------ open jobs


@pytest.mark.parametrize("request_,field", [
    ({"op": "append", "job": 4, "entries": "echo 3"}, "entries"),
    ({"op": "append", "job": 4, "entries": ["a\0b"]}, "entries"),
    ({"op": "append", "job": 4, "entries": [3]}, "entries"),
    ({"op": "append", "job": [4], "entries": ["a"]}, "job"),
    ({"op": "close", "job": True}, "job"),
    ({"op": "submit", "spec": dict(OPEN_SPEC, open="yes")}, "open"),
    ({"op": "submit", "spec": dict(OPEN_SPEC, ids=[[1, 2, 1]])}, "ids"),
    ({"op": "submit", "spec": dict(OPEN_SPEC, ids=[[0, 2, 2]], entries=["a", "b"])}, "ids"),
    ({"op": "submit", "spec": dict(SPEC, open=True)}, "entries"),
    ({"op": "submit", "spec": dict(OPEN_SPEC, ids=[])}, "entries"),
])
def test_malformed_open_job_requests_are_refused_by_name(server, request_, field):
    refused(server, request_, field)
    assert_replays(server)


def refusal(server, request) -> str:
    reply, error = handle(server, wire(request))
    assert isinstance(error, RequestError), (request, reply)
    return str(error)


def test_append_to_a_job_that_is_not_open_is_refused(server):
    assert "job 1 takes no more tasks: it was not submitted open" in refusal(
        server, {"op": "append", "job": 1, "entries": ["x"]})
    handle(server, {"op": "close", "job": 4})
    assert "job 4 takes no more tasks: it was closed" in refusal(
        server, {"op": "append", "job": 4, "entries": ["x"]})
    reply, _ = handle(server, {"op": "close", "job": 4})
    assert reply["closed"] is False


def test_cancel_closes_an_open_job(server):
    handle(server, {"op": "cancel", "jobs": [4]})
    assert "job 4 takes no more tasks: it was canceled" in refusal(
        server, {"op": "append", "job": 4, "entries": ["x"]})
    assert server.core.state.jobs[4].done
    assert_replays(server)


def test_append_beyond_the_tasks_a_job_holds_is_refused(server, monkeypatch):
    from hpcqueue.server import handlers

    monkeypatch.setattr(handlers, "MAX_TASKS_PER_JOB", 5)
    reply, _ = handle(server, {"op": "append", "job": 4, "entries": ["a", "b", "c"]})
    assert reply == {"job": 4, "tasks": 5, "first": 2}
    assert "at most 5 tasks" in refusal(server, {"op": "append", "job": 4, "entries": ["d"]})
    assert_replays(server)


def test_an_open_job_grows_and_ends_when_closed(server):
    job = server.core.state.jobs[4]
    reply, _ = handle(server, wire({"op": "append", "job": 4, "entries": ["echo 3"]}))
    assert reply["first"] == 2 and job.n == 3 and job.entries[2] == "echo 3"
    assert not job.done
    reply, _ = handle(server, {"op": "close", "job": 4})
    assert reply["closed"] is True and not job.open
    assert_replays(server)
