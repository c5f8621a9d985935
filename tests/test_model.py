import pytest

from hpcqueue.exceptions import UsageError
from hpcqueue.model import (
    IdRanges, canonical_json, check_placeholders, fill_placeholders, param_hash, parse_array,
    parse_duration, parse_env, parse_resources, parse_retry_delay, retry_delay,
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


def test_a_placeholder_value_can_be_computed_only_when_used():
    calls = []

    def hash_():
        calls.append(1)
        return "abc"

    values = {"TASK_ID": 7, "HASH": hash_}
    assert fill_placeholders("out/%{TASK_ID}", values) == "out/7" and not calls
    assert fill_placeholders("runs/%{HASH}/%{TASK_ID}", values) == "runs/abc/7"
    check_placeholders("runs/%{HASH}", "--cwd")


@pytest.mark.parametrize("text,low,high", [
    ("1s:4s", 1, 4), ("30s", 30, 30), ("10s:10m", 10, 600), ("2:8", 2, 8),
    ("500ms:1s", 0.5, 1), (" 1s : 1s ", 1, 1),
])
def test_retry_delays(text, low, high):
    assert parse_retry_delay(text) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize("text,match", [
    ("4s:1s", "MAX is less than MIN"), ("0s:1s", "more than 0"), ("0", "more than 0"),
    ("1s:2s:3s", "MIN:MAX"), ("01:30:00", "MIN:MAX"), ("1x", "--retry-delay MIN"),
    ("1s:", "--retry-delay MAX"), ("1s:40000d", "at most"),
])
def test_bad_retry_delays_say_what_to_write(text, match):
    with pytest.raises(UsageError, match=match):
        parse_retry_delay(text)


def test_retry_delay_doubles_up_to_the_most():
    assert [retry_delay(1.0, 4.0, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert retry_delay(0.5, 1e9, 255) == 1e9  # no overflow at the last retry a byte counts


def test_param_hash_of_json_ignores_key_order_and_whitespace():
    a = param_hash("json", ["./sim"], 0, '{"b": 2, "a": [1, {"y": 1, "x": 2}]}')
    b = param_hash("json", ["./other"], 5, '{"a":[1,{"x":2,"y":1}],"b":2}')
    assert a == b and len(a) == 12 and int(a, 16) >= 0
    assert a != param_hash("json", ["./sim"], 0, '{"a": [1, {"x": 2, "y": 1}], "b": 3}')
    # what is hashed, exactly: sha256 of the canonical JSON, first 12 hex digits
    import hashlib
    assert a == hashlib.sha256(b'{"a":[1,{"x":2,"y":1}],"b":2}').hexdigest()[:12]
    assert canonical_json({"b": 1, "a": "\u00e9"}) == '{"a":"\u00e9","b":1}'


def test_param_hash_of_a_line_and_of_an_array_task():
    import hashlib
    assert param_hash("lines", None, 3, "echo 1") == \
        hashlib.sha256(b"echo 1").hexdigest()[:12]
    assert param_hash("lines", None, 3, "a  b") != param_hash("lines", None, 3, "a b")
    assert param_hash("array", ["./sim", "-v"], 7, None) == \
        hashlib.sha256(b'[["./sim","-v"],7]').hexdigest()[:12]
    assert param_hash("array", ["./sim"], 7, None) != param_hash("array", ["./sim"], 8, None)
    # an entry that is not JSON in a json job (another client): hashed as it is
    assert param_hash("json", None, 0, "{nope") == hashlib.sha256(b"{nope").hexdigest()[:12]
