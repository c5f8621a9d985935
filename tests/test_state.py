"""The state machine on its own: events in, state out, replay exact."""

from hpcqueue.model import CANCELED, FAILED, FINISHED, RUNNING, WAITING, JobState
from hpcqueue.server import dispatch
from hpcqueue.state import ServerState, restore


def spec(n=10, **kw):
    s = {"cmd": ["true"], "ids": [[1, n, 1]], "cpus": 1}
    s.update(kw)
    return s


class Recorder:
    """Applies events and keeps them, as the server does with its journal."""

    def __init__(self):
        self.state = ServerState()
        self.events = []

    def __call__(self, **ev):
        ev.setdefault("t", 1.0)
        self.events.append(ev)
        self.state.apply(ev)
        return self.state


def test_waiting_job_allocates_nothing_per_task():
    rec = Recorder()
    st = rec(e="job", id=1, spec=spec(1_000_000))
    job = st.jobs[1]
    assert job.waiting == 1_000_000 and job.state is None
    assert job.job_state() is JobState.WAITING


def test_start_finish_and_counts():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(3))
    rec(e="worker", id=1, info={"cpus": 2})
    st = rec(e="start", w=1, tasks=[1, [0, 1]])
    job = st.jobs[1]
    assert job.counts[WAITING] == 1 and job.counts[RUNNING] == 2
    assert st.workers[1].used_cpus == 2
    st = rec(e="done", w=1, r=[[1, 0, 0, 0, 1.0, 2.0, None], [1, 1, 0, 3, 1.0, 2.0, "exit code 3"]])
    assert job.state[0] == FINISHED and job.state[1] == FAILED
    assert job.errors[1] == "exit code 3"
    assert st.workers[1].used_cpus == 0
    assert job.job_state() is JobState.RUNNING


def test_stale_and_duplicate_results_are_ignored():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1))
    rec(e="worker", id=1, info={"cpus": 1})
    rec(e="worker", id=2, info={"cpus": 1})
    rec(e="start", w=1, tasks=[1, [0]])
    st = rec(e="done", w=2, r=[[1, 0, 0, 0, 1.0, 2.0, None]])  # from the wrong worker
    assert st.jobs[1].state[0] == RUNNING
    st = rec(e="done", w=1, r=[[1, 0, 5, 0, 1.0, 2.0, None]])  # wrong instance
    assert st.jobs[1].state[0] == RUNNING
    rec(e="done", w=1, r=[[1, 0, 0, 0, 1.0, 2.0, None]])
    st = rec(e="done", w=1, r=[[1, 0, 0, 1, 1.0, 2.0, None]])  # a second finish
    assert st.jobs[1].state[0] == FINISHED and st.jobs[1].counts[FINISHED] == 1


def test_retries_requeue_then_fail():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, max_retries=1))
    rec(e="worker", id=1, info={"cpus": 1})
    rec(e="start", w=1, tasks=[1, [0]])
    st = rec(e="done", w=1, r=[[1, 0, 0, 1, 1.0, 2.0, None]])
    job = st.jobs[1]
    assert job.state[0] == WAITING and 1 in st.ready
    assert job.take(5) == [0]
    rec(e="start", w=1, tasks=[1, [0]])
    assert job.instance(0) == 1
    rec(e="done", w=1, r=[[1, 0, 1, 1, 1.0, 2.0, None]])
    assert job.state[0] == FAILED and job.done


def test_lost_worker_requeues_until_crash_limit():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, crash_limit=2))
    for w in (1, 2):
        rec(e="worker", id=w, info={"cpus": 1})
        rec(e="start", w=w, tasks=[1, [0]])
        st = rec(e="wgone", id=w, reason="lost", crash=True)
    job = st.jobs[1]
    assert job.state[0] == FAILED and "crash limit" in job.errors[0]


def test_stopped_worker_requeues_without_crash():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, crash_limit=1))
    rec(e="worker", id=1, info={"cpus": 1})
    rec(e="start", w=1, tasks=[1, [0]])
    st = rec(e="wgone", id=1, reason="stopped", crash=False)
    assert st.jobs[1].state[0] == WAITING and st.jobs[1].crashes[0] == 0


def test_cancel_marks_waiting_and_running():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(100))
    rec(e="worker", id=1, info={"cpus": 2})
    rec(e="start", w=1, tasks=[1, [0, 1]])
    st = rec(e="cancel", ids=[1])
    job = st.jobs[1]
    assert job.counts[CANCELED] == 100 and job.done
    assert sorted(st.to_kill) == [(1, 1, 0), (1, 1, 1)]
    assert job.task_state(50) == CANCELED
    assert st.workers[1].used_cpus == 0 and not st.workers[1].tasks
    assert job.job_state() is JobState.CANCELED


def test_restart_requeues_running_tasks_with_a_new_instance():
    rec = Recorder()
    rec(e="server", t=0.0)
    rec(e="job", id=1, spec=spec(4))
    rec(e="worker", id=1, info={"cpus": 4})
    rec(e="start", w=1, tasks=[1, [0, 1, 2, 3]])
    rec(e="done", w=1, r=[[1, 0, 0, 0, 1.0, 2.0, None]])
    st = restore(rec.events + [{"e": "server", "t": 5.0}])
    job = st.jobs[1]
    assert job.state[0] == FINISHED
    assert [job.state[i] for i in (1, 2, 3)] == [WAITING] * 3
    taken = job.take(10)
    assert sorted(taken) == [1, 2, 3]
    assert st.next_job_id == 2 and st.next_worker_id == 2


def test_replay_reaches_the_same_state_as_live():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(50, max_retries=1))
    rec(e="job", id=2, spec=spec(20, priority=5))
    rec(e="worker", id=1, info={"cpus": 3})
    live = rec.state
    for round_ in range(40):
        for w, picked in dispatch.plan(live.ready_jobs(), [live.workers[1]], 1.0):
            rec(e="start", w=w.id, tasks=picked)
        running = sorted(live.workers[1].tasks)
        rows = [[j, i, live.jobs[j].instance(i), (i + round_) % 3 == 0, 1.0, 2.0, None]
                for j, i in running[:2]]
        rows = [[j, i, inst, int(bad), a, b, m] for j, i, inst, bad, a, b, m in rows]
        rec(e="done", w=1, r=rows)
    replayed = restore(rec.events)
    for job_id, job in live.jobs.items():
        other = replayed.jobs[job_id]
        assert other.counts == job.counts
        assert bytes(other.state) == bytes(job.state)
        assert list(other.starts) == list(job.starts)
        assert other.cursor == job.cursor


def test_priority_orders_dispatch():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(5))
    rec(e="job", id=2, spec=spec(5, priority=3))
    st = rec(e="worker", id=1, info={"cpus": 2})
    (w, picked), = dispatch.plan(st.ready_jobs(), [st.workers[1]], 1.0)
    assert picked == [2, [0, 1]]


def test_a_task_handed_back_forever_fails_before_its_start_count_overflows():
    from hpcqueue.jobs import MAX_STARTS

    rec = Recorder()
    rec(e="job", id=1, spec=spec(1))
    rec(e="worker", id=1, info={"cpus": 1})
    job = rec.state.jobs[1]
    for _ in range(MAX_STARTS):
        rec(e="start", w=1, tasks=[1, [0]])
        rec(e="back", w=1, tasks=[1, [0]])
    assert job.state[0] == FAILED and job.starts[0] == MAX_STARTS and job.done
    assert "given up" in job.errors[0] and 1 not in rec.state.ready
    assert bytes(restore(rec.events).jobs[1].state) == bytes(job.state)


def test_values_beyond_the_columns_in_an_old_journal_do_not_stop_a_restart():
    """Journals written before the server checked specs and results."""
    events = [
        {"e": "job", "id": 1, "spec": spec(2, max_retries=300, crash_limit=1000), "t": 1.0},
        {"e": "worker", "id": 1, "info": {"cpus": 2}, "t": 1.0},
    ]
    for k in range(300):
        events.append({"e": "start", "w": 1, "tasks": [1, [0]], "t": 1.0})
        events.append({"e": "done", "w": 1, "r": [[1, 0, k, 1, 1.0, 2.0, "x"]], "t": 1.0})
    events.append({"e": "start", "w": 1, "tasks": [1, [1]], "t": 1.0})
    events.append({"e": "done", "w": 1, "r": [[1, 1, 0, 2**31, 1.0, 2.0, "x"]], "t": 1.0})
    job = restore(events).jobs[1]
    assert job.max_retries == 255 and job.crash_limit == 255
    assert job.state[0] == FAILED and job.retries[0] == 255
    assert job.exit[1] == 2**31 - 1 and job.state[1] == WAITING  # a retry


# ------------------------------------------------------------------ open jobs (streaming)


def open_spec(entries=(), **kw):
    entries = list(entries)
    s = {"cmd": None, "shell": True, "ids": [[0, len(entries) - 1, 1]] if entries else [],
         "entries": entries, "cpus": 1, "open": True}
    s.update(kw)
    return s


def test_an_open_job_is_not_done_until_it_is_closed():
    rec = Recorder()
    st = rec(e="job", id=1, spec=open_spec())
    job = st.jobs[1]
    assert job.n == 0 and job.open and not job.done and job.ended is None
    assert job.job_state() is JobState.WAITING and 1 not in st.ready and not st.just_done
    rec(e="append", id=1, entries=["echo a", "echo b"])
    assert job.n == 2 and job.waiting == 2 and 1 in st.ready
    assert list(job.ids) == [0, 1] and job.entries == ["echo a", "echo b"]
    rec(e="worker", id=1, info={"cpus": 2})
    rec(e="start", w=1, tasks=[1, [0, 1]])
    rec(e="done", w=1, r=[[1, 0, 0, 0, 1.0, 2.0, None], [1, 1, 0, 0, 1.0, 2.0, None]])
    # every task has ended, but more may come: still not done
    assert not job.done and job.ended is None and not st.just_done
    assert job.job_state() is JobState.RUNNING and job.summary()["open"] is True
    rec(e="close", id=1, t=7.0)
    assert job.done and job.ended == 7.0 and st.just_done == [job]
    assert job.job_state() is JobState.FINISHED and job.summary()["open"] is False
    # a second close, or an append after it (neither is sent: the server refuses them)
    rec(e="close", id=1)
    rec(e="append", id=1, entries=["echo c"])
    assert job.n == 2


def test_append_grows_the_columns_in_place_and_the_new_tasks_wait():
    rec = Recorder()
    rec(e="job", id=1, spec=open_spec(["a", "b", "c"]))
    rec(e="worker", id=1, info={"cpus": 1})
    st = rec(e="start", w=1, tasks=[1, [0]])
    job = st.jobs[1]
    state, t0 = job.state, job.t0
    rec(e="append", id=1, entries=[f"x{i}" for i in range(1000)])
    assert job.state is state and job.t0 is t0  # the same columns, longer
    for name in ("state", "starts", "crashes", "retries", "exit", "worker", "t0", "t1"):
        assert len(getattr(job, name)) == 1003, name
    assert job.counts == [1002, 1, 0, 0, 0] and job.state[0] == RUNNING
    assert job.spec["ids"] == [[0, 1002, 1]] and job.ids.id_at(1002) == 1002
    assert job.task_row(1002)["entry"] == "x999" and job.task_row(1002)["state"] == "waiting"
    assert job.take(3) == [1, 2, 3]


def test_apply_leaves_the_events_as_they_were():
    """An open job grows its own copies of entries and ids, not those of the `job` event
    (which a journal, a stream or a test may still hold)."""
    rec = Recorder()
    rec(e="job", id=1, spec=open_spec(["a"]))
    rec(e="append", id=1, entries=["b", "c"])
    assert rec.events[0]["spec"]["entries"] == ["a"]
    assert rec.events[0]["spec"]["ids"] == [[0, 0, 1]]
    assert restore(rec.events).jobs[1].entries == ["a", "b", "c"]


def test_cancel_closes_an_open_job():
    rec = Recorder()
    rec(e="job", id=1, spec=open_spec(["a", "b"]))
    rec(e="worker", id=1, info={"cpus": 1})
    rec(e="start", w=1, tasks=[1, [0]])
    st = rec(e="cancel", ids=[1])
    job = st.jobs[1]
    assert not job.open and job.done and job.counts[CANCELED] == 2
    assert st.to_kill == [(1, 1, 0)]


def test_an_open_job_with_no_task_canceled_ends():
    rec = Recorder()
    st = rec(e="job", id=1, spec=open_spec())
    st = rec(e="cancel", ids=[1], t=3.0)
    assert st.jobs[1].done and st.jobs[1].ended == 3.0 and not st.jobs[1].open


def test_replay_of_appends_and_closes_reaches_the_same_state():
    rec = Recorder()
    rec(e="job", id=1, spec=open_spec(["a"], max_retries=1))
    rec(e="worker", id=1, info={"cpus": 2})
    live = rec.state
    for round_ in range(12):
        rec(e="append", id=1, entries=[f"line {round_} {k}" for k in range(round_ % 3)])
        for w, picked in dispatch.plan(live.ready_jobs(), [live.workers[1]], 1.0):
            rec(e="start", w=w.id, tasks=picked)
        rows = [[j, i, live.jobs[j].instance(i), (i + round_) % 2, 1.0, 2.0, None]
                for j, i in sorted(live.workers[1].tasks)[:1]]
        rec(e="done", w=1, r=rows)
    rec(e="close", id=1)
    replayed = restore(rec.events)
    job, other = live.jobs[1], replayed.jobs[1]
    assert (other.n, other.entries, other.spec, other.open) == (job.n, job.entries, job.spec,
                                                                job.open)
    assert other.counts == job.counts and bytes(other.state) == bytes(job.state)
    assert other.cursor == job.cursor and list(other.requeued) == list(job.requeued)


def test_final_failures_are_collected_only_when_asked_and_not_retries():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(2, max_retries=1, crash_limit=1))
    rec(e="worker", id=1, info={"cpus": 2})
    st = rec(e="start", w=1, tasks=[1, [0, 1]])
    assert st.just_failed is None  # a replay collects nothing
    st.just_failed = []
    rec(e="done", w=1, r=[[1, 0, 0, 3, 1.0, 2.0, "exit code 3"]])
    assert st.just_failed == []  # retried: not final
    rec(e="start", w=1, tasks=[1, [0]])
    rec(e="done", w=1, r=[[1, 0, 1, 3, 1.0, 2.0, "exit code 3"]])
    assert st.just_failed == [(1, 0)]
    rec(e="done", w=1, r=[[1, 0, 1, 3, 1.0, 2.0, "exit code 3"]])  # a duplicate: ignored
    assert st.just_failed == [(1, 0)]
    rec(e="wgone", id=1, reason="lost", crash=True)  # task 1: crash limit 1
    assert st.just_failed == [(1, 0), (1, 1)]
# ------------------------------------------------------------------ delayed retries


def failed(rec, w, job_id, i, t):
    """Start task I on worker W and fail it; the server got the result at T."""
    rec(e="start", w=w, tasks=[job_id, [i]], t=t - 0.5)
    inst = rec.state.jobs[job_id].instance(i)
    return rec(e="done", w=w, r=[[job_id, i, inst, 1, t - 0.5, t, "exit code 1"]], t=t)


def test_a_delayed_retry_waits_and_is_not_handed_out_until_due():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, max_retries=3, retry_delay=[1.0, 4.0]))
    rec(e="worker", id=1, info={"cpus": 1})
    st = failed(rec, 1, 1, 0, t=100.0)
    job = st.jobs[1]
    # waiting in the counts (the job is not done), but not ready to hand out
    assert job.state[0] == WAITING and job.counts[WAITING] == 1 and not job.done
    assert job.retry_at == {0: 101.0} and job.available == 0 and 1 not in st.ready
    assert st.delayed == [(101.0, 1, 0)] and job.task_row(0)["retry_at"] == 101.0
    assert dispatch.plan(st.ready_jobs(), [st.workers[1]], 200.0) == []
    assert job.take(5) == []
    rec(e="due", t=100.9)  # too early: nothing moves
    assert job.retry_at == {0: 101.0} and 1 not in st.ready
    rec(e="due", t=101.0)
    assert job.retry_at == {} and st.delayed == [] and 1 in st.ready
    (w, picked), = dispatch.plan(st.ready_jobs(), [st.workers[1]], 101.0)
    assert picked == [1, [0]]


def test_delays_double_up_to_the_most_and_come_from_the_result_time():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, max_retries=5, retry_delay=[1.0, 4.0]))
    rec(e="worker", id=1, info={"cpus": 1})
    job = rec.state.jobs[1]
    t, delays = 100.0, []
    for _ in range(5):
        failed(rec, 1, 1, 0, t)
        delays.append(job.retry_at[0] - t)
        t = job.retry_at[0]
        rec(e="due", t=t)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    failed(rec, 1, 1, 0, t + 1)  # the sixth failure: no retry left
    assert job.state[0] == FAILED and job.done and not job.retry_at


def test_retry_timeout_counts_from_the_first_failure():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, max_retries=10, retry_timeout=5.0))
    rec(e="worker", id=1, info={"cpus": 1})
    job = rec.state.jobs[1]
    failed(rec, 1, 1, 0, t=100.0)
    assert job.state[0] == WAITING and job.failed_since == {0: 100.0}
    failed(rec, 1, 1, 0, t=104.9)
    assert job.state[0] == WAITING and job.retries[0] == 2
    failed(rec, 1, 1, 0, t=105.0)
    assert job.state[0] == FAILED and job.retries[0] == 2 and job.done
    assert "retry timeout" in job.errors[0] and job.failed_since == {}


def test_a_success_forgets_the_first_failure():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(2, max_retries=2, retry_timeout=5.0))
    rec(e="worker", id=1, info={"cpus": 1})
    failed(rec, 1, 1, 0, t=100.0)
    rec(e="start", w=1, tasks=[1, [0]])
    st = rec(e="done", w=1, r=[[1, 0, 1, 0, 100.5, 101.0, None]], t=101.0)
    assert st.jobs[1].state[0] == FINISHED and st.jobs[1].failed_since == {}


def test_cancel_cancels_delayed_retries():
    rec = Recorder()
    rec(e="job", id=1, spec=spec(3, max_retries=1, retry_delay=[10.0, 10.0]))
    rec(e="worker", id=1, info={"cpus": 1})
    failed(rec, 1, 1, 0, t=100.0)
    st = rec(e="cancel", ids=[1], t=101.0)
    job = st.jobs[1]
    assert job.done and job.counts[CANCELED] == 3 and job.task_state(0) == CANCELED
    assert job.retry_at == {} and job.job_state() is JobState.CANCELED
    rec(e="due", t=200.0)  # the heap's entry is dropped, nothing comes back
    assert st.delayed == [] and job.counts[WAITING] == 0 and 1 not in st.ready


def test_a_restart_keeps_the_delay_from_the_journal():
    rec = Recorder()
    rec(e="server", t=0.0)
    rec(e="job", id=1, spec=spec(2, max_retries=1, retry_delay=[30.0, 30.0]))
    rec(e="worker", id=1, info={"cpus": 2})
    failed(rec, 1, 1, 0, t=100.0)
    rec(e="start", w=1, tasks=[1, [1]], t=100.0)
    st = restore(rec.events + [{"e": "server", "t": 110.0}])
    job = st.jobs[1]
    assert job.retry_at == {0: 130.0} and st.delayed == [(130.0, 1, 0)]
    assert job.take(5) == [1]  # the running one went back; the delayed one waits
    st.apply({"e": "due", "t": 130.0})
    assert job.take(5) == [0]


def test_replay_leaves_no_way_to_hand_a_delayed_retry_out_early():
    """A task handed back, started and then delayed stays in the replayed queue (replay does
    not take); it must still wait for its time."""
    rec = Recorder()
    rec(e="job", id=1, spec=spec(1, max_retries=1, retry_delay=[30.0, 30.0]))
    rec(e="worker", id=1, info={"cpus": 1})
    rec(e="start", w=1, tasks=[1, [0]])
    rec(e="back", w=1, tasks=[1, [0]])
    failed(rec, 1, 1, 0, t=100.0)
    st = restore(rec.events)
    assert list(st.jobs[1].requeued) == [0] and st.jobs[1].retry_at == {0: 130.0}
    assert st.jobs[1].take(5) == []
