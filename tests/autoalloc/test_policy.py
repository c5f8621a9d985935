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


# --------------------------------------------------------------- --target-drain


def drain(**kw):
    return limits(**{"backlog": 50, "target_drain": 10.0, **kw})


def test_drain_sizes_by_work_not_by_task_count():
    d = decide([Demand(job=1, count=200, mean_runtime=0.2)], drain(), InFlight())
    assert d.submit == 4
    assert "200 task(s) × 0.2s (observed) ÷ 10s = 4 worker(s)" in d.reason
    assert d.reason.endswith("4 more worker(s): submit 4 allocation(s)")


def test_drain_rounds_up_and_says_so():
    d = decide([Demand(job=1, count=190, mean_runtime=0.21)], drain(), InFlight())
    assert d.submit == 4  # 3.99 workers
    assert "= 3.99 worker(s) → 4 worker(s)" in d.reason


def test_drain_counts_workers_running_and_on_their_way():
    demand = [Demand(job=1, count=200, mean_runtime=0.2)]
    d = decide(demand, drain(), InFlight(running_allocs=1, live_workers=1))
    assert d.submit == 3 and "1 worker(s) running or on their way" in d.reason
    d = decide(demand, drain(), InFlight(running_allocs=2, live_workers=1, booting_workers=1,
                                         queued_allocs=1))
    assert d.submit == 1
    d = decide(demand, drain(), InFlight(running_allocs=4, live_workers=4))
    assert d.submit == 0 and d.reason.endswith("no more needed")
    d = decide(demand, drain(), InFlight(running_allocs=6, live_workers=6))
    assert d.submit == 0  # more than enough: nothing cancelled, nothing added


def test_drain_short_tasks_want_one_worker_not_none():
    d = decide([Demand(job=1, count=200, mean_runtime=0.001)], drain(), InFlight())
    assert d.submit == 1 and "→ 1 worker(s)" in d.reason


def test_drain_never_more_workers_than_runnable_tasks():
    d = decide([Demand(job=1, count=3, mean_runtime=3600)], drain(), InFlight())
    assert d.submit == 3  # 1080 workers' worth of work, but 3 tasks
    assert "capped at 3 worker(s) for 3 runnable task(s)" in d.reason
    # tasks per worker from cpus: 8 one-cpu tasks fit two 4-cpu workers
    d = decide([Demand(job=1, count=8, mean_runtime=3600)], drain(cpus=4), InFlight())
    assert d.submit == 2 and "÷ 4 per worker" in d.reason
    # and workers on their way count against that cap too
    d = decide([Demand(job=1, count=3, mean_runtime=3600)], drain(),
               InFlight(queued_allocs=2))
    assert d.submit == 1 and "2 on their way" in d.reason


def test_drain_cpus_per_task_share_a_worker():
    # 2-cpu tasks on 8-cpu workers: 4 at once; 400 × 1s ÷ 4 ÷ 10s = 10 workers
    d = decide([Demand(job=1, count=400, cpus=2, mean_runtime=1.0)], drain(cpus=8),
               InFlight())
    assert d.submit == 10 and "÷ 4 per worker" in d.reason


def test_drain_prior_is_the_time_request_before_any_task_ended():
    d = decide([Demand(job=1, count=100, time_request=5.0)], drain(), InFlight())
    assert d.submit == 50 and "(--time-request, none ended yet)" in d.reason
    # once tasks ended, the observed time wins over the request
    d = decide([Demand(job=1, count=100, time_request=5.0, mean_runtime=1.0)], drain(),
               InFlight())
    assert d.submit == 10 and "(observed)" in d.reason


def test_drain_without_any_run_time_starts_one_worker_to_measure():
    d = decide([Demand(job=1, count=200)], drain(), InFlight())
    assert d.submit == 1 and "no run time yet" in d.reason
    d = decide([Demand(job=1, count=200)], drain(), InFlight(queued_allocs=1))
    assert d.submit == 0 and "no more needed" in d.reason
    d = decide([Demand(job=1, count=200)], drain(workers_per_alloc=3), InFlight())
    assert d.submit == 1  # one allocation, whatever its size


def test_drain_sums_jobs():
    demand = [Demand(job=1, count=100, mean_runtime=0.5), Demand(job=2, count=20,
                                                                 mean_runtime=3.0)]
    d = decide(demand, drain(), InFlight())
    assert d.submit == 11  # 5 + 6
    assert "job 1: 100 task(s) × 0.5s" in d.reason and "job 2: 20 task(s) × 3s" in d.reason
    assert "→ 11 worker(s)" in d.reason
    # a job with no run time yet adds nothing once other workers come anyway
    d = decide(demand + [Demand(job=3, count=5)], drain(), InFlight())
    assert d.submit == 11 and "job 3: 5 task(s) with no run time yet" in d.reason


def test_drain_keeps_the_queue_limits():
    demand = [Demand(job=1, count=1000, mean_runtime=1.0)]
    d = decide(demand, drain(backlog=3), InFlight())
    assert d.submit == 3
    d = decide(demand, drain(backlog=3), InFlight(queued_allocs=3))
    assert d.submit == 0 and "backlog is full" in d.reason and "--target-drain" in d.reason
    d = decide(demand, drain(max_worker_count=8, workers_per_alloc=2), InFlight())
    assert d.submit == 4
    d = decide(demand, drain(max_worker_count=8), InFlight(running_allocs=8, live_workers=8))
    assert d.submit == 0 and "--max-worker-count" in d.reason


def test_drain_workers_per_alloc_rounds_allocations_up():
    d = decide([Demand(job=1, count=500, mean_runtime=1.0)], drain(workers_per_alloc=4),
               InFlight())
    assert d.submit == 13  # 50 workers in allocations of 4


def test_drain_unfit_tasks_add_no_work():
    d = decide([Demand(job=1, count=100, cpus=8, mean_runtime=10.0),
                Demand(job=2, count=10, mean_runtime=1.0)], drain(cpus=4), InFlight())
    assert d.submit == 1 and len(d.unfit) == 1


@pytest.mark.parametrize("count", [1, 7, 200, 5000])
@pytest.mark.parametrize("runtime", [None, 0.0, 0.2, 30.0, 7200.0])
@pytest.mark.parametrize("flight", [InFlight(), InFlight(queued_allocs=1),
                                    InFlight(running_allocs=3, live_workers=2,
                                             booting_workers=1)])
@pytest.mark.parametrize("cpus,wpa", [(None, 1), (4, 1), (1, 3)])
def test_drain_limits_hold_for_any_input(count, runtime, flight, cpus, wpa):
    q = limits(backlog=4, max_worker_count=24, workers_per_alloc=wpa, cpus=cpus,
               target_drain=60.0)
    d = decide([Demand(job=1, count=count, mean_runtime=runtime)], q, flight)
    count_sized = decide([Demand(job=1, count=count)], limits(
        backlog=4, max_worker_count=24, workers_per_alloc=wpa, cpus=cpus), flight)
    assert 0 <= d.submit <= count_sized.submit  # never more than a worker per task
    assert flight.queued_allocs + d.submit <= q.backlog
    assert (flight.queued_allocs + flight.running_allocs + d.submit) * wpa <= 24
    if runtime:
        work = count * runtime / (cpus or 1) / 60.0
        have = flight.live_workers + flight.booting_workers + flight.queued_allocs * wpa
        if work > have + 1 and count_sized.submit:
            assert d.submit >= 1
