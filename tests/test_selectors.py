"""Job and task id selectors: the parser the CLI and the server share, and the CLI's errors."""

from __future__ import annotations

import pytest

from hpcqueue.exceptions import NotFound, UsageError
from hpcqueue.selectors import JobSelector, one_job, parse_jobs, parse_tasks, task_spans

from conftest import hq


@pytest.mark.parametrize("text,ranges,last,all_", [
    ("3", ((3, 3),), False, False),
    ("1-3,7", ((1, 3), (7, 7)), False, False),
    (" 7 , 1-3 ", ((1, 3), (7, 7)), False, False),
    ("1-3,2-5,6", ((1, 6),), False, False),
    ("last", (), True, False),
    ("1-2,last", ((1, 2),), True, False),
    ("all", (), False, True),
])
def test_job_selectors_parse(text, ranges, last, all_):
    assert parse_jobs(text) == JobSelector(ranges=ranges, last=last, all=all_)


@pytest.mark.parametrize("text,words", [
    ("", "no jobs"), ("x", "'x'"), ("3-1", "ends before it starts"), ("1-", "'1-'"),
    ("all,3", "alone"), ("-3", "'-3'"), ("1,,2", "''"), (str(2**63), "at most"),
])
def test_bad_job_selectors_say_what_is_wrong(text, words):
    with pytest.raises(UsageError, match=words):
        parse_jobs(text)


def test_resolving_jobs_cuts_ranges_without_looping_over_them():
    ids = [1, 2, 5, 9, 10]
    assert parse_jobs("1-9").resolve(ids) == [1, 2, 5, 9]
    assert parse_jobs("2,last").resolve(ids) == [2, 10]
    assert parse_jobs("9-10,last").resolve(ids) == [9, 10]
    assert parse_jobs("all").resolve(ids) == ids
    assert parse_jobs("1-1000000000000").resolve(ids) == ids  # no loop per id
    with pytest.raises(NotFound, match="no job 3"):
        parse_jobs("3").resolve(ids)
    with pytest.raises(NotFound, match="no job in 3-4"):
        parse_jobs("3-4").resolve(ids)
    with pytest.raises(NotFound):
        parse_jobs("last").resolve([])


def test_one_job_refuses_a_selector_of_several():
    assert one_job("5") == 5 and one_job("last") == "last" and one_job("4-4") == 4
    for text in ("1-3", "all", "1,last"):
        with pytest.raises(UsageError, match="takes one"):
            one_job(text)


def test_task_selectors_parse_and_map_to_index_spans():
    assert parse_tasks("1-100,200") == ((1, 100), (200, 200))
    with pytest.raises(UsageError, match="last"):
        parse_tasks("last")
    # ids 0,2,..,18 (indexes 0-9) then 100-109 (indexes 10-19)
    job = [(0, 18, 2), (100, 109, 1)]
    assert task_spans(parse_tasks("3-7"), job) == [(2, 3)]
    assert task_spans(parse_tasks("4"), job) == [(2, 2)]
    assert task_spans(parse_tasks("5"), job) == []
    assert task_spans(parse_tasks("18-101,105"), job) == [(9, 11), (15, 15)]
    assert task_spans(parse_tasks("0-10"), job) == [(0, 5)]
    # a million-task job and a huge range: spans, not ids
    assert task_spans(parse_tasks("1-99999999999"), [(1, 1_000_000, 1)]) == [(0, 999_999)]


def test_cli_refuses_bad_selectors_before_connecting(tmp_path):
    p = hq("job", "wait", "3-1", server_dir=tmp_path / "none", check=False)
    assert p.returncode == 2 and "ends before it starts" in p.stderr
    assert "Traceback" not in p.stderr
    p = hq("job", "info", "1-3", server_dir=tmp_path / "none", check=False)
    assert p.returncode == 2 and "names several jobs" in p.stderr
    p = hq("task", "list", "1", "--tasks", "a-b", server_dir=tmp_path / "none", check=False)
    assert p.returncode == 2 and "not a task id" in p.stderr


def test_job_cat_takes_the_shared_task_selector(cluster):
    """`job cat --tasks` parses ids as every other command does, and the server looks up only
    the tasks named (files per task, not `--stream`)."""
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    out = cluster.tmp / "out"
    cluster.hq("submit", "--array", "1-20:2", "--stdout", f"{out}/%{{TASK_ID}}.out",
               "--", "sh", "-c", 'echo "t$HPCQUEUE_TASK_ID"; [ "$HPCQUEUE_TASK_ID" != 7 ]')
    cluster.hq("job", "wait", "1", check=False)
    got = cluster.hq("job", "cat", "1", "stdout", "--tasks", "3-7,19,100-200").stdout
    assert got.splitlines() == ["t3", "t5", "t7", "t19"]
    got = cluster.hq("job", "cat", "1", "stdout", "--failed", "--tasks", "1-9").stdout
    assert got.splitlines() == ["t7"]
    assert cluster.hq("job", "cat", "1", "stdout", "--failed", "--tasks", "9-20").stdout == ""
    p = cluster.hq("job", "cat", "1", "stdout", "--tasks", "9-3", check=False)
    assert p.returncode == 2 and "ends before it starts" in p.stderr
    assert "Traceback" not in p.stderr
