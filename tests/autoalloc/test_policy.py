"""The scaling policy on its own: waiting tasks and limits in, a count out."""

import pytest

from hpcqueue.autoalloc.policy import Demand, InFlight, Limits, decide


def limits(**kw):
    base = dict(time_limit=600, backlog=2, workers_per_alloc=1, max_worker_count=None)
    base.update(kw)
    return Limits(**base)


def test_no_tasks_no_allocations():
    d = decide([], limits(), InFlight())
    assert d.submit == 0 and d.reason == "no waiting tasks"


def test_submits_up_to_the_backlog():
    d = decide([Demand(job=1, count=50)], limits(backlog=2), InFlight())
    assert d.submit == 2
    assert "50 waiting" in d.reason


def test_never_exceeds_backlog_counting_queued():
    d = decide([Demand(job=1, count=50)], limits(backlog=2), InFlight(queued_allocs=1))
    assert d.submit == 1
    d = decide([Demand(job=1, count=50)], limits(backlog=2), InFlight(queued_allocs=2))
    assert d.submit == 0 and "backlog is full" in d.reason


def test_never_exceeds_max_worker_count():
    d = decide([Demand(job=1, count=50)], limits(backlog=5, max_worker_count=2),
               InFlight(running_allocs=1))
    assert d.submit == 1
    d = decide([Demand(job=1, count=50)], limits(backlog=5, max_worker_count=2),
               InFlight(running_allocs=2))
    assert d.submit == 0 and "max-worker-count" in d.reason


def test_workers_per_alloc_counts_against_the_worker_limit():
    d = decide([Demand(job=1, count=100)],
               limits(backlog=10, workers_per_alloc=4, max_worker_count=10), InFlight())
    assert d.submit == 2  # 8 workers; a third allocation would make 12


def test_few_tasks_need_few_allocations():
    d = decide([Demand(job=1, count=1)], limits(backlog=5), InFlight())
    assert d.submit == 1
    d = decide([Demand(job=1, count=8)], limits(backlog=5, cpus=4), InFlight())
    assert d.submit == 2  # 4 single-cpu tasks per worker


def test_booting_workers_cover_waiting_tasks():
    d = decide([Demand(job=1, count=2)], limits(backlog=5), InFlight(queued_allocs=2))
    assert d.submit == 0 and "already on their way" in d.reason
    d = decide([Demand(job=1, count=3)], limits(backlog=5),
               InFlight(running_allocs=1, booting_workers=1, queued_allocs=1))
    assert d.submit == 1


def test_time_request_longer_than_the_queue_never_triggers():
    d = decide([Demand(job=7, count=1, time_request=7200)], limits(time_limit=600), InFlight())
    assert d.submit == 0
    assert d.reason == "no waiting tasks fit this queue"
    assert "--time-request 2h00m00s" in d.unfit[0] and "--time-limit 10m00s" in d.unfit[0]


@pytest.mark.parametrize("demand,lim,why", [
    (Demand(job=1, count=3, cpus=8), dict(cpus=4), "8 cpus"),
    (Demand(job=1, count=3, gpus=1), dict(), "gpus"),
    (Demand(job=1, count=3, gpus=4), dict(gpus=2), "4 gpus"),
    (Demand(job=1, count=3, other=("fpga",)), dict(), "fpga"),
])
def test_tasks_that_do_not_fit_a_worker_never_trigger(demand, lim, why):
    d = decide([demand], limits(**lim), InFlight())
    assert d.submit == 0 and why in d.unfit[0]


def test_fitting_tasks_still_count_beside_unfit_ones():
    d = decide([Demand(job=1, count=1, time_request=7200), Demand(job=2, count=1)],
               limits(), InFlight())
    assert d.submit == 1 and len(d.unfit) == 1


def test_gpu_tasks_per_worker():
    d = decide([Demand(job=1, count=4, gpus=1)], limits(backlog=9, cpus=32, gpus=2), InFlight())
    assert d.submit == 2  # two one-gpu tasks per two-gpu worker


@pytest.mark.parametrize("count", [0, 1, 3, 10, 1000])
@pytest.mark.parametrize("queued,running", [(0, 0), (1, 0), (0, 3), (2, 2)])
def test_limits_hold_for_any_input(count, queued, running):
    q = limits(backlog=2, max_worker_count=4, workers_per_alloc=1)
    d = decide([Demand(job=1, count=count)] if count else [], q,
               InFlight(queued_allocs=queued, running_allocs=running))
    assert 0 <= d.submit
    assert queued + d.submit <= max(q.backlog, queued)
    assert (queued + running + d.submit) <= max(q.max_worker_count, queued + running)
