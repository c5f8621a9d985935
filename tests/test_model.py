import pytest

from hpcqueue.exceptions import UsageError
from hpcqueue.model import (
    IdRanges, check_placeholders, fill_placeholders, parse_array, parse_duration, parse_env,
    parse_resources,
)


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800),
    ("01:30:00", 5400), ("30:00", 1800), ("5", 5), ("1-02:00:00", 93600), ("250ms", 0.25),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5q", "-5", "1:2:3:4", "h1"])
def test_bad_durations_name_the_value(text):
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)


def test_array_is_ranges_not_ids():
    ids = parse_array("1-1000000")
    assert len(ids) == 1_000_000
    assert ids.ranges == [(1, 1000000, 1)]
    assert ids.id_at(0) == 1 and ids.id_at(999_999) == 1_000_000
    assert ids.index_of(500) == 499 and ids.index_of(0) is None


def test_array_mixed_spec():
    ids = parse_array("10-19:3,1,5")
    assert list(ids) == [1, 5, 10, 13, 16, 19]
    assert [ids.id_at(i) for i in range(len(ids))] == list(ids)
    assert [ids.index_of(t) for t in ids] == list(range(6))
    assert ids.index_of(11) is None
    assert ids.spec() == "1,5,10-19:3"
    assert IdRanges(ids.ranges).spec() == ids.spec()


@pytest.mark.parametrize("spec,match", [
    ("5-1", "ends before it starts"), ("a-b", "not a range"), ("1-5,3-8", "overlap"),
    ("1-5:0", "step"), ("0-200000000", "at most"),
])
def test_bad_arrays(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_array(spec)


def test_resources_and_env():
    assert parse_resources(["gpus=2", "mem=4"]) == {"gpus": 2, "mem": 4}
    for bad in (["gpus"], ["gpus=x"], ["cpus=2"], ["gpus=-1"]):
        with pytest.raises(UsageError):
            parse_resources(bad)
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(UsageError):
        parse_env(["1A=2"])


def test_placeholders():
    values = {"JOB_ID": 3, "TASK_ID": 7, "INSTANCE_ID": 0, "CWD": "/w", "SUBMIT_DIR": "/s"}
    assert fill_placeholders("%{CWD}/job-%{JOB_ID}/%{TASK_ID}.%{INSTANCE_ID}", values) \
        == "/w/job-3/7.0"
    check_placeholders("%{SUBMIT_DIR}/x", "--stdout")
    with pytest.raises(UsageError, match="unknown placeholder"):
        check_placeholders("%{NOPE}", "--stdout")
