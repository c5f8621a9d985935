"""The autoalloc loop with a fake transport: submissions, backoff, auto-pause, replay."""

import asyncio
import time

import pytest

from hpcqueue.autoalloc.model import AllocState, QueueParams, QueueState
from hpcqueue.autoalloc.schedulers.base import RawStatus
from hpcqueue.autoalloc.service import AutoAlloc
from hpcqueue.exceptions import SchedulerError, UsageError
from hpcqueue.server.core import Core
from hpcqueue.state import ServerState, restore


class FakeTransport:
    def __init__(self, fail=None):
        self.fail = fail
        self.submitted = []
        self.statuses = {}
        self.cancelled = []
        self.status_calls = 0

    async def submit(self, scheduler, script, cwd, hold=False):
        if self.fail:
            raise SchedulerError(self.fail)
        job_id = str(100 + len(self.submitted))
        self.submitted.append(script.read_text())
        self.statuses[job_id] = RawStatus("PENDING")
        return job_id

    async def status(self, scheduler, job_ids):
        self.status_calls += 1
        return {j: self.statuses[j] for j in job_ids if j in self.statuses}

    async def cancel(self, scheduler, job_ids):
        self.cancelled += job_ids


class Harness:
    def __init__(self, tmp_path, transport):
        self.events = []
        self.core = Core(ServerState())
        original = self.core.record

        def record(ev):
            self.events.append(ev)
            original(ev)

        self.core.record = record
        self.aa = AutoAlloc(self.core, tmp_path)
        self.aa.backend = lambda params: (self._sched(params), transport)
        self.core.autoalloc = self.aa

    @staticmethod
    def _sched(params):
        from hpcqueue.autoalloc import backends
        return backends.scheduler(params.scheduler)

    def add_queue(self, **kw):
        params = QueueParams(scheduler="slurm", time_limit=600, **kw)
        self.core.record({"e": "aq_add", "id": 1, "params": params.to_dict(), "t": time.time()})
        return self.core.state.alloc.queues[1]

    def submit_job(self, n, **kw):
        spec = {"cmd": ["true"], "ids": [[1, n, 1]], "cpus": 1, **kw}
        return self.core.submit(spec)


def test_submits_against_the_backlog_and_records_allocations(tmp_path):
    async def main():
        t = FakeTransport()
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=2, max_worker_count=2, partition="cpu")
        h.submit_job(50)
        await h.aa.cycle()
        assert len(t.submitted) == 2
        assert "#SBATCH --partition=cpu" in t.submitted[0]
        assert [a.state for a in q.allocations.values()] == [AllocState.QUEUED] * 2
        assert (tmp_path / "autoalloc/1/1/job.sh").exists()
        assert (tmp_path / "autoalloc/1/1/job_id").read_text() == "100\n"
        await h.aa.cycle()
        assert len(t.submitted) == 2  # backlog and worker limit hold
        assert "backlog is full" in q.decisions[-1][2]
        # the allocations start and end; with no worker ever connected that is a fault
        for job_id in ("100", "101"):
            t.statuses[job_id] = RawStatus("COMPLETED")
        h.aa._last_poll = 0
        await h.aa.refresh()
        assert {a.state for a in q.allocations.values()} == {AllocState.FAILED}
        assert q.faults_in_row == 2
        assert t.status_calls == 1  # one call for both allocations
    asyncio.run(main())


def test_worker_connect_marks_running_and_cancel_is_not_a_fault(tmp_path):
    async def main():
        t = FakeTransport()
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=1)
        h.submit_job(5)
        await h.aa.cycle()
        h.core.record({"e": "worker", "id": 1, "info": {"cpus": 1, "alloc": "1.1"},
                       "t": time.time()})
        a = q.allocations["1.1"]
        assert a.state is AllocState.RUNNING and a.workers == {1}
        t.statuses["100"] = RawStatus("CANCELLED")
        h.aa._last_poll = 0
        await h.aa.refresh()
        assert a.state is AllocState.FINISHED and a.reason == "cancelled" and not a.fault
        assert q.state is QueueState.ACTIVE and q.faults_in_row == 0
    asyncio.run(main())


def test_failed_submissions_back_off_then_pause(tmp_path):
    async def main():
        t = FakeTransport(fail="sbatch: error: invalid partition specified: nosuch")
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=3, pause_after=3)
        h.submit_job(10)
        await h.aa.cycle()
        assert q.submit_failures == 1 and "invalid partition" in q.last_error
        await h.aa.cycle()  # inside the 60 s backoff: no new try
        assert q.submit_failures == 1 and "backing off" in q.decisions[-1][2]
        q.last_failure -= 3600
        await h.aa.cycle()
        q.last_failure -= 3600
        await h.aa.cycle()
        assert q.state is QueueState.PAUSED
        assert "3 failures in a row" in q.pause_reason and "alloc resume" in q.pause_reason
        h.core.record({"e": "aq_resume", "id": 1, "t": time.time()})
        assert q.state is QueueState.ACTIVE and q.submit_failures == 0
    asyncio.run(main())


def test_task_too_long_for_the_queue_submits_nothing(tmp_path):
    async def main():
        t = FakeTransport()
        h = Harness(tmp_path, t)
        q = h.add_queue()
        h.submit_job(1, time_request=7200)
        await h.aa.cycle()
        assert t.submitted == []
        assert "--time-request 2h00m00s" in q.decisions[-1][3][0]
    asyncio.run(main())


def test_queues_and_allocations_come_back_from_the_journal(tmp_path):
    async def main():
        t = FakeTransport()
        h = Harness(tmp_path, t)
        h.add_queue(backlog=1, name="cpu")
        h.submit_job(5)
        await h.aa.cycle()
        h.core.record({"e": "worker", "id": 1, "info": {"cpus": 1, "alloc": "1.1"},
                       "t": time.time()})
        state = restore(h.events + [{"e": "server", "t": time.time()}])
        q = state.alloc.queues[1]
        assert q.params.name == "cpu" and q.state is QueueState.ACTIVE
        a = q.allocations["1.1"]
        assert a.state is AllocState.RUNNING and a.job_id == "100"
        assert a.live_workers == set()  # the old worker is gone; a reconnect relinks it
        state.apply({"e": "worker", "id": 2, "info": {"cpus": 1, "alloc": "1.1"}, "t": 1.0})
        assert a.live_workers == {2}
        assert q.next_alloc == 2
    asyncio.run(main())


def test_remove_force_cancels_and_drains(tmp_path):
    async def main():
        t = FakeTransport()
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=2)
        h.submit_job(10)
        await h.aa.cycle()
        cancelled = await h.aa.cancel_all(q)
        h.core.record({"e": "aq_remove", "id": 1, "force": True, "t": time.time()})
        assert sorted(t.cancelled) == ["100", "101"] and len(cancelled) == 2
        assert q.state is QueueState.DRAINING
        for j in ("100", "101"):
            t.statuses[j] = RawStatus("CANCELLED")
        h.aa._last_poll = 0
        await h.aa.refresh()
        assert q.state is QueueState.REMOVED
    asyncio.run(main())


def test_only_the_last_folders_of_ended_allocations_are_kept(tmp_path):
    async def main():
        t = FakeTransport()
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=2, keep_dirs=1)
        h.submit_job(10)
        await h.aa.cycle()
        for job_id in ("100", "101"):
            t.statuses[job_id] = RawStatus("TIMEOUT")  # ended, not the queue's fault
        h.aa._last_poll = 0
        await h.aa.cycle()  # sees both end, then submits again, which trims
        assert "1.3" in q.allocations
        assert not (tmp_path / "autoalloc/1/1").exists()
        assert (tmp_path / "autoalloc/1/2/job.sh").exists()
        assert (tmp_path / "autoalloc/1/3/job.sh").exists()
    asyncio.run(main())


def test_demand_leaves_out_retries_that_wait_out_their_delay():
    from types import SimpleNamespace

    from hpcqueue.autoalloc.service import demand_of
    from hpcqueue.jobs import Job

    job = Job(1, {"cmd": ["false"], "ids": [[1, 5, 1]], "cpus": 1, "max_retries": 3,
                  "retry_delay": [600, 600]}, 0)
    state = SimpleNamespace(ready_jobs=lambda: [job])
    assert [d.count for d in demand_of(state)] == [5]
    now = time.time()
    for i in (0, 1):
        job.start(i, 1, now)
        assert job.finish(i, 1, now, now + 1, None, now + 1)  # back to waiting, delayed
    assert job.waiting == 5 and job.available == 3
    assert [d.count for d in demand_of(state)] == [3]


class FlakyStatus(FakeTransport):
    """Status reads fail while `broken` is set."""

    def __init__(self):
        super().__init__()
        self.broken = False

    async def status(self, scheduler, job_ids):
        if self.broken:
            self.status_calls += 1
            raise SchedulerError("`squeue ...` failed (exit code 1): slurm_load_jobs error: "
                                 "Socket timed out")
        return await super().status(scheduler, job_ids)


def test_an_allocation_whose_status_never_reads_is_given_up_after_ten_tries(tmp_path):
    from hpcqueue.autoalloc.handlers import alloc_explain
    from hpcqueue.autoalloc.model import MAX_STATUS_ERRORS

    async def poll(h, n):
        for _ in range(n):
            h.aa._last_poll = 0
            await h.aa.cycle()

    async def main():
        t = FlakyStatus()
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=1, pause_after=5)
        h.submit_job(5)
        await h.aa.cycle()
        assert len(t.submitted) == 1
        t.broken = True
        # failures that stop short of the cap count, and a good read clears them
        await poll(h, MAX_STATUS_ERRORS - 1)
        assert q.allocations["1.1"].state is AllocState.QUEUED
        assert h.aa.status_errors["1.1"][0] == MAX_STATUS_ERRORS - 1
        t.broken = False
        await poll(h, 1)
        assert "1.1" not in h.aa.status_errors
        t.broken = True
        await poll(h, MAX_STATUS_ERRORS - 1)
        assert q.allocations["1.1"].state is AllocState.QUEUED and len(t.submitted) == 1
        r = alloc_explain(h.core, {"queue": 1})
        assert [(e["id"], e["count"], e["limit"]) for e in r["status_errors"]] == \
            [("1.1", MAX_STATUS_ERRORS - 1, MAX_STATUS_ERRORS)]
        assert "Socket timed out" in r["status_errors"][0]["error"] and r["unknown"] == []
        calls = t.status_calls
        # the tenth in a row: unknown, out of the backlog, and a new allocation takes its place
        await poll(h, 1)
        a = q.allocations["1.1"]
        assert a.state is AllocState.UNKNOWN and not a.live and a.fault
        assert "could not be read 10 times in a row" in a.reason
        assert "Socket timed out" in a.reason and "backlog" in a.reason
        assert len(t.submitted) == 2 and q.allocations["1.2"].state is AllocState.QUEUED
        r = alloc_explain(h.core, {"queue": 1})
        assert [u["id"] for u in r["unknown"]] == ["1.1"] and r["status_errors"] == []
        assert "could not be read 10 times" in r["unknown"][0]["reason"]
        await poll(h, 1)  # the unknown one is not polled any more
        assert t.status_calls == calls + 2
        assert h.aa.status_errors == {"1.2": (1, h.aa.status_errors["1.2"][1])}
        # journaled: a restart sees it unknown, not queued
        state = restore(h.events + [{"e": "server", "t": time.time()}])
        assert state.alloc.queues[1].allocations["1.1"].state is AllocState.UNKNOWN
    asyncio.run(main())


def test_status_errors_do_not_give_up_an_allocation_whose_workers_are_connected(tmp_path):
    from hpcqueue.autoalloc.model import MAX_STATUS_ERRORS

    async def main():
        t = FlakyStatus()
        h = Harness(tmp_path, t)
        q = h.add_queue(backlog=1)
        h.submit_job(5)
        await h.aa.cycle()
        h.core.record({"e": "worker", "id": 1, "info": {"cpus": 1, "alloc": "1.1"},
                       "t": time.time()})
        t.broken = True
        for _ in range(MAX_STATUS_ERRORS + 2):
            h.aa._last_poll = 0
            await h.aa.refresh()
        assert q.allocations["1.1"].state is AllocState.RUNNING
        assert h.aa.status_errors["1.1"][0] == MAX_STATUS_ERRORS + 2
    asyncio.run(main())


def _probe(tmp_path, t, arrivals, **kw):
    from hpcqueue.autoalloc import backends
    from hpcqueue.autoalloc.probe import run_probe

    params = QueueParams(scheduler="slurm", time_limit=600, partition="multi", **kw)
    d = tmp_path / "probe-x"
    d.mkdir()
    return run_probe(params, backends.scheduler("slurm"), t, d, tmp_path, "10.0.0.1:99",
                     "tok", arrivals)


def test_probe_passes_when_every_node_connects(tmp_path):
    async def main():
        t = FakeTransport()
        arrivals = []

        async def nodes_connect():
            await asyncio.sleep(0.2)
            t.statuses["100"] = RawStatus("RUNNING")
            arrivals.extend(["n1", "n2"])
        task = asyncio.ensure_future(nodes_connect())
        note = await _probe(tmp_path, t, arrivals, workers_per_alloc=2)
        await task
        assert note == "2 node(s) of probe job 100 reached the server at 10.0.0.1:99: n1, n2"
        assert t.cancelled == ["100"]  # still running: cancelled, never left behind
        script = t.submitted[0]
        assert "hpcqueue.autoalloc.probe tok" in script and "srun --nodes=2" in script
        assert "#SBATCH --time=00:01:00" in script and "worker start" not in script
    asyncio.run(main())


def test_probe_that_ends_without_nodes_names_the_address_and_their_words(tmp_path):
    async def main():
        t = FakeTransport()

        async def ended():
            await asyncio.sleep(0.2)
            t.statuses["100"] = RawStatus("FAILED")
            (tmp_path / "probe-x/stderr").write_text(
                "hpcqueue probe on n1: cannot reach the server at 10.0.0.1:99: No route to "
                "host\nsrun: error: n1: task 0: Exited with exit code 1\n")
        task = asyncio.ensure_future(ended())
        with pytest.raises(UsageError) as e:
            await _probe(tmp_path, t, [])
        await task
        msg = str(e.value)
        assert "cannot reach the server at 10.0.0.1:99: 0 of 1 node(s) of probe job 100" in msg
        assert "No route to host" in msg and "`hpcqueue server start --host ADDRESS`" in msg
        assert t.cancelled == []  # it had ended
    asyncio.run(main())


def test_probe_still_queued_is_cancelled_and_not_checked(tmp_path, monkeypatch):
    from hpcqueue.autoalloc import probe

    monkeypatch.setattr(probe, "START_WAIT", 0.3)

    async def main():
        t = FakeTransport()
        note = await _probe(tmp_path, t, [])
        assert "did not start within 0.3s" in note and "was not checked" in note
        assert t.cancelled == ["100"]
        # and when the wait itself is cut short (the request is cancelled), the job goes too
        t2 = FakeTransport()
        waiting = asyncio.ensure_future(_probe_in(tmp_path / "b", t2))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert t2.cancelled == ["100"]
    asyncio.run(main())


async def _probe_in(d, t):
    d.mkdir()
    return await _probe(d, t, [])
