"""Listings in pages (`task list`, `job list`), `job forget`, and what `job wait` waits for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import random
import time

from hpcqueue.cli.common import ENV_PAGE_ROWS
from hpcqueue.cli.output import with_times
from hpcqueue.jobs import Job
from hpcqueue.listing import TIME_KEYS, json_rows, list_page, page_ndjson, page_rows
from hpcqueue.timefmt import iso
from hpcqueue.model import IdRanges
from hpcqueue.selectors import parse_tasks, task_spans

from conftest import wait_for

N = 3000  # tasks: a few pages of 1,000


def _finished_job(cluster, *extra):
    """Job 1: N tasks of --array 1-N, every third failing, all ended."""
    cluster.start_server()
    cluster.hq("submit", "--array", f"1-{N}", "--stdout", "none", "--stderr", "none", *extra,
               "--", "sh", "-c", 'exit $(( HPCQUEUE_TASK_ID % 3 == 0 ))')
    cluster.start_worker("--cpus", "4")
    p = cluster.hq("job", "wait", "1", check=False, timeout=240)
    assert p.returncode == 1, p.stdout + p.stderr  # some failed


def _ndjson(cluster, *args):
    out = cluster.hq("task", "list", *args, "--output", "ndjson", timeout=60).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_pages_are_the_rows_of_the_job_in_any_mix():
    """Paging a job's tasks (pages as the server builds them) gives Job.task_row's rows, for
    any filter, id selection, page size and scan budget; ndjson as json.dumps writes them."""
    rnd = random.Random(1)
    for trial in range(300):
        ranges = [[1, 40, 3], [100, 130, 1]] if trial % 2 else [[5, 200, 1]]
        spec = {"ids": ranges}
        if trial % 3 == 0:
            spec["entries"] = [f"line {i}" for i in range(len(IdRanges(ranges)))]
        job = Job(1, spec, 0)
        if trial % 5:
            for i in range(job.n):
                if rnd.random() < 0.6:
                    job.start(i, 1, 1.5)
                    r = rnd.random()
                    if r < 0.5:
                        job.finish(i, 0, 1.5, 2.5 + i, None, 3)
                    elif r < 0.7:
                        job.finish(i, 3, 1.5, 2.5, "boom", 3)
        if trial % 7 == 0:
            job.cancel()
        codes = rnd.choice([None, [2], [3], [0, 1], [4], [2, 3, 4]])
        sel = rnd.choice([None, "1-10", "2-50,120-125", "7", "1000-2000"])
        spans = task_spans(parse_tasks(sel), job.ids.ranges) if sel else None
        want = [job.task_row(i) for i in range(job.n)
                if (codes is None or job.task_state(i) in codes)
                and (spans is None or any(a <= i <= b for a, b in spans))]
        got, got_json, text, after = [], [], "", 0
        limit, scan = rnd.choice([1, 3, 7, 1000]), rnd.choice([1, 5, 1000])
        while True:
            page = list_page(job, spans, codes, after, limit, scan)
            got += page_rows(page)
            got_json += json_rows(page)
            text += page_ndjson(page)
            if page["next"] is None:
                break
            assert page["next"] > after
            after = page["next"]
        assert got == want, trial
        want_json = [{k: iso(v) if k in TIME_KEYS and v is not None else v
                      for k, v in r.items()} for r in want]
        assert got_json == want_json, trial
        assert text == "".join(json.dumps(r) + "\n" for r in want_json), trial


def test_a_filter_of_a_state_no_task_is_in_scans_nothing():
    job = Job(1, {"ids": [[1, 1_000_000, 1]]}, 0)
    job.start(5, 1, 1.0)
    job.finish(5, 0, 1.0, 2.0, None)

    class NoScan(bytearray):
        def __getitem__(self, k):
            if isinstance(k, slice):
                raise AssertionError("the state column was scanned")
            return super().__getitem__(k)

    job.state = NoScan(job.state)
    page = list_page(job, None, [3, 4], 0, 10)  # failed, canceled: none, say the counters
    assert page["rows"] == 0 and page["next"] is None


def test_task_listings_in_pages_agree(cluster, monkeypatch):
    monkeypatch.setenv(ENV_PAGE_ROWS, "1000")  # pages of 1,000 rows
    _finished_job(cluster)
    rows = _ndjson(cluster, "1")
    assert [r["id"] for r in rows] == list(range(1, N + 1))
    assert {r["state"] for r in rows} == {"finished", "failed"}
    assert all((r["exit_code"] == 1) == (r["id"] % 3 == 0) for r in rows)
    as_json = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    # JSON gives times in ISO 8601 (the JSON lines too, once page_ndjson does)
    assert as_json == [with_times(r, "start", "end") for r in rows]
    # --limit, --tasks, --filter and their mix
    assert _ndjson(cluster, "1", "--limit", "10") == rows[:10]
    assert _ndjson(cluster, "last", "--tasks", "5-7,2999-4000") == rows[4:7] + rows[2998:]
    failed = _ndjson(cluster, "1", "--filter", "failed")
    assert failed == [r for r in rows if r["state"] == "failed"] and len(failed) == N // 3
    assert _ndjson(cluster, "1", "--filter", "failed", "--tasks", "1-100", "--limit", "5") \
        == [r for r in rows if r["state"] == "failed" and r["id"] <= 100][:5]
    assert _ndjson(cluster, "1", "--filter", "running") == []
    assert _ndjson(cluster, "1", "--filter", "failed", "--filter", "finished") == rows
    assert json.loads(cluster.hq("task", "list", "1", "--filter", "waiting", "--output",
                                 "json").stdout) == []
    # the table: a header once, then one line per task (longer than a screen: streamed)
    table = cluster.hq("task", "list", "1", env={"LINES": "20", "COLUMNS": "100"}).stdout
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "STATE", "EXIT", "WORKER", "INSTANCE", "TIME"]
    assert len(lines) == N + 1
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(1, N + 1))
    assert [line.split()[1] for line in lines[1:]] == [r["state"] for r in rows]
    small = cluster.hq("task", "list", "1", "--limit", "3").stdout
    assert "ID" in small and len(small.splitlines()) == 4
    # job list with selectors, filters and a limit
    jobs = json.loads(cluster.hq("job", "list", "1-5", "--output", "json").stdout)
    assert [j["id"] for j in jobs] == [1] and jobs[0]["failed"] == N // 3
    p = cluster.hq("job", "list", "7", check=False)
    assert p.returncode != 0 and "no job 7" in p.stderr and "Traceback" not in p.stderr
    p = cluster.hq("task", "list", "1-2", check=False)
    assert p.returncode == 2 and "names several jobs" in p.stderr


def test_task_list_into_head_ends_quietly_and_fast(cluster):
    cluster.start_server()
    cluster.hq("submit", "--array", "1-200000", "--", "true")  # never started: columns-free
    env = dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir))
    for output in ("ndjson", "table", "json"):
        t0 = time.monotonic()
        p = subprocess.run(f"{sys.executable} -m hpcqueue task list 1 --output {output} "
                           "| head -1; echo \"${PIPESTATUS[0]}\"", shell=True,
                           executable="/bin/bash", capture_output=True, text=True, env=env,
                           timeout=60)
        took = time.monotonic() - t0
        assert p.stderr == "", p.stderr
        first, status = p.stdout.splitlines()
        assert status == "0" and first, p.stdout
        assert took < 10, f"{output}: {took:.1f}s"  # (not a benchmark: a hang would show)
    # the server took the client going away mid-listing and still answers
    assert cluster.hq("job", "info", "1").returncode == 0
    assert "Traceback" not in cluster.log("server.log")


def test_forget_survives_a_restart_and_refuses_unfinished_jobs(cluster, tmp_path):
    journal = tmp_path / "journal.bin"
    cluster.start_server("--journal", journal)
    cluster.hq("submit", "--array", "1-3", "--", "true")
    cluster.hq("submit", "--array", "1-2", "--", "false")
    cluster.start_worker()
    cluster.hq("job", "wait", "1-2", check=False, timeout=60)
    cluster.hq("submit", "--array", "1-2", "--", "sleep", "60")  # job 3: unfinished
    p = cluster.hq("job", "forget", "1-3", check=False)
    assert p.returncode == 1 and "job 3 is" in p.stderr and "cancel it" in p.stderr
    assert "Traceback" not in p.stderr
    assert "forgot job(s) 1 2" in cluster.hq("job", "forget", "all").stdout
    assert [j["id"] for j in json.loads(cluster.hq("job", "list", "--output", "json").stdout)] \
        == [3]
    assert "no job 1" in cluster.hq("job", "info", "1", check=False).stderr
    cluster.hq("job", "cancel", "3")
    cluster.hq("server", "stop")
    wait_for(lambda: cluster.server.poll() is not None, what="the server to stop")
    cluster.start_server("--journal", journal)
    jobs = json.loads(cluster.hq("job", "list", "--output", "json").stdout)
    assert [j["id"] for j in jobs] == [3]
    assert "job 4 submitted" in cluster.hq("submit", "--", "true").stdout  # ids not reused


def test_wait_all_waits_for_the_unfinished_jobs_only(cluster):
    cluster.start_server()
    cluster.start_worker()
    cluster.hq("submit", "--", "sh", "-c", "sleep 1; false")
    p = cluster.hq("job", "wait", "all", check=False, timeout=60)
    assert p.returncode == 1 and "1 failed" in p.stdout
    cluster.hq("submit", "--array", "1-3", "--", "sh", "-c", "sleep 1")
    p = cluster.hq("job", "wait", "all", timeout=60)  # job 1's failure is not waited for
    assert "job 2 finished" in p.stdout and "job 1" not in p.stdout
    p = cluster.hq("job", "wait", "all", timeout=60)
    assert p.returncode == 0 and "no unfinished job" in p.stdout
    assert cluster.hq("job", "wait", "1-2", check=False, timeout=60).returncode == 1
    assert cluster.hq("submit", "--wait", "--", "true", timeout=60).returncode == 0
    assert cluster.hq("submit", "--wait", "--", "false", check=False,
                      timeout=60).returncode == 1


def test_listing_times_are_the_iso_stamps_of_timefmt():
    """`page_ndjson` formats times its own way for speed: it must agree with `timefmt.iso`
    to the microsecond, rounding near a whole second included."""
    from hpcqueue.listing import _stamps

    rnd = random.Random(11)
    times = [1.7e9 + rnd.random() * 1e6 for _ in range(2000)]
    times += [1_800_000_000.9999996, 1_800_000_000.0000004, 1.5, 86399.9999999]
    assert _stamps(times) == [json.dumps(iso(t)) for t in times]
    assert _stamps([0.0]) == ["null"]


def test_a_worker_that_reports_on_a_forgotten_job_is_not_dropped(cluster):
    """A canceled job can be forgotten before its tasks have died on the worker; their late
    results name a job the server no longer holds, which is no fault of the worker's."""
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    cluster.hq("submit", "--array", "1-2", "--stdout", "none", "--stderr", "none", "--",
               "sh", "-c", "trap 'sleep 1; exit 3' TERM; sleep 30 & wait")
    wait_for(lambda: json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)[
        "running"] == 2, what="both tasks running")
    cluster.hq("job", "cancel", "1")
    assert "forgot job(s) 1" in cluster.hq("job", "forget", "1").stdout
    time.sleep(2.5)  # the tasks die 1 s after their SIGTERM, and the worker reports them
    assert [w["state"] for w in cluster.workers()] == ["running"]
    cluster.hq("submit", "--", "true")
    assert "1 finished" in cluster.hq("job", "wait", "2", timeout=30).stdout
    assert "malformed" not in cluster.log("server.log")
