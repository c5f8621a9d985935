"""hpcqueue.jobspec: Python arguments to options, options to a job spec (pure); and the
typed errors a client rebuilds from a reply."""

from datetime import timedelta

import pytest

from hpcqueue.exceptions import (
    NotFound, ProtocolError, Refused, RequestError, SchedulerError, Unavailable, UsageError,
    from_reply,
)
from hpcqueue.jobspec import make_spec, python_options


def spec(command=("./sim.sh",), **kw):
    return make_spec(python_options(**kw), list(command), submit_dir="/work")


def test_python_values_become_the_options_the_command_line_parses():
    s = spec(array=range(0, 100, 2), resources={"gpus": 1}, env={"A": "1"},
             time_limit=timedelta(minutes=90), time_request="1h", priority="high",
             max_retries=2, retry_delay=("1s", 4), retry_timeout=60, cwd="sub")
    assert s["ids"] == [[0, 98, 2]] and s["kind"] == "array"
    assert s["res"] == {"gpus": 1} and s["env"] == {"A": "1"}
    assert (s["time_limit"], s["time_request"], s["priority"]) == (5400.0, 3600.0, 100)
    assert (s["retry_delay"], s["retry_timeout"]) == ([1.0, 4.0], 60.0)
    assert s["cwd"] == "/work/sub" and s["name"] == "sim.sh"
    assert spec(array=[3, 1, 2])["ids"] == [[1, 1, 1], [2, 2, 1], [3, 3, 1]]
    assert spec(array=7)["ids"] == [[7, 7, 1]]
    assert spec(retry_delay="2s", max_retries=1)["retry_delay"] == [2.0, 2.0]


@pytest.mark.parametrize("kw, message", [
    ({"cpus": 0}, "cpus must be a whole number from 1"),
    ({"cpus": True}, "cpus must be a whole number"),
    ({"max_retries": 256}, "max_retries must be a whole number from 0 to 255"),
    ({"array": range(5, 1)}, "holds no task id"),
    ({"array": ["1"]}, "array must be task ids"),
    ({"time_limit": -1}, "time_limit must be seconds from 0"),
    ({"time_limit": "soon"}, "invalid time_limit 'soon'"),
    ({"retry_delay": (4, 1), "max_retries": 1}, r"retry_delay must be \(MIN, MAX\)"),
    ({"env": "A=1"}, "env must be a dict or a list of NAME=VALUE strings"),
    ({"stdout": 3}, "stdout must be a path"),
])
def test_a_bad_argument_is_named(kw, message):
    with pytest.raises(UsageError, match=message):
        spec(**kw)


def test_reply_kinds_become_typed_errors():
    assert type(from_reply({"ok": False, "error": "no job 3", "kind": "NotFound"})) is NotFound
    e = from_reply({"ok": False, "error": "journal full", "kind": "JournalUnavailable"})
    assert type(e) is Unavailable and str(e) == "journal full"
    assert type(from_reply({"ok": False, "error": "x", "kind": "SchedulerError"})) \
        is SchedulerError
    old = from_reply({"ok": False, "error": "a refusal from an older server"})
    assert type(old) is Refused and isinstance(old, RequestError)
    assert type(from_reply({"ok": False, "error": "x", "kind": "SomethingNew"})) is Refused
    assert isinstance(from_reply([1, 2]), ProtocolError)
    assert isinstance(NotFound("x"), Refused)
