"""The dispatch decision: what fits which worker."""

from hpcqueue.jobs import Job
from hpcqueue.server import dispatch
from hpcqueue.state import WorkerRecord


def job(n=100, **kw):
    spec = {"cmd": ["true"], "ids": [[0, n - 1, 1]], "cpus": 1}
    spec.update(kw)
    return Job(1, spec, 0.0)


def worker(cpus=4, res=None, deadline=None):
    w = WorkerRecord(id=1, info={}, connected=0.0, cpus=cpus, res=res or {}, deadline=deadline)
    w.used_res = {k: 0 for k in w.res}
    return w


def test_fills_capacity_without_prefetch_for_unknown_runtimes():
    (w, picked), = dispatch.plan([job()], [worker(4)], 0.0)
    assert picked == [1, [0, 1, 2, 3]]


def test_short_tasks_are_prefetched_long_ones_not():
    short = job()
    short.mean_runtime = 0.01  # ten per cpu make 0.1 s of queued work
    assert dispatch.room_for(short, worker(4)) == 4 * (1 + 10)
    tiny = job()
    tiny.mean_runtime = 0.0
    assert dispatch.room_for(tiny, worker(4)) == 4 * (1 + dispatch.PREFETCH_MAX)
    medium = job()
    medium.mean_runtime = 0.3
    assert dispatch.room_for(medium, worker(4)) == 8
    long_ = job()
    long_.mean_runtime = 60.0
    assert dispatch.room_for(long_, worker(4)) == 4


def test_cpus_and_resources_must_fit():
    assert not dispatch.fits_worker(job(cpus=8), worker(4), 0.0)
    assert not dispatch.fits_worker(job(res={"gpus": 1}), worker(4), 0.0)
    gpu = job(res={"gpus": 1}, cpus=1)
    w = worker(8, {"gpus": 2})
    assert dispatch.fits_worker(gpu, w, 0.0)
    (_, picked), = dispatch.plan([gpu], [w], 0.0)
    assert picked == [1, [0, 1]]  # two gpus, not eight cpus, limit it


def test_time_request_must_fit_the_time_left():
    j = job(time_request=3600)
    assert not dispatch.fits_worker(j, worker(deadline=1800.0), 0.0)
    assert dispatch.fits_worker(j, worker(deadline=7200.0), 0.0)
    assert dispatch.fits_worker(j, worker(deadline=None), 0.0)
    assert dispatch.plan([j], [worker(deadline=1800.0)], 0.0) == []


def test_round_spreads_over_idle_workers_and_respects_batch_limit():
    j = job(n=10)
    a, b = worker(2), worker(2)
    b.id = 2
    plans = dispatch.plan([j], [a, b], 0.0)
    assert sorted(len(p[1][1]) for p in plans) == [2, 2]
    assert a.used_cpus == 0 and b.used_cpus == 0  # counters are the start event's job


def test_tasks_taken_for_a_start_that_cannot_be_journaled_wait_again():
    from hpcqueue.jobs import Job

    job = Job(1, {"cmd": ["true"], "ids": [[0, 9, 1]]}, 0.0)
    first = job.take(4)
    second = job.take(3)
    job.untake(second)
    job.untake(first)
    assert job.cursor == 0 and not job.requeued
    assert job.take(10) == list(range(10))
