"""Journal files: header, versions, torn tails, damage, export and prune."""

import io
import json
import os
import stat

import pytest

from hpcqueue.exceptions import JournalError
from hpcqueue.journal import JournalWriter, read_events, restore_file
from hpcqueue.journal.format import HEADER, MAGIC
from hpcqueue.journal.tools import export, prune


def write(path, events):
    w = JournalWriter(path)
    w.prepare(None)
    for ev in events:
        w.append(ev)
    w.close()


EVENTS = [
    {"e": "server", "t": 0.0},
    {"e": "job", "id": 1, "spec": {"cmd": ["true"], "ids": [[0, 1, 1]]}, "t": 1.0},
    {"e": "job", "id": 2, "spec": {"cmd": ["true"], "ids": [[0, 2, 1]]}, "t": 1.0},
    {"e": "worker", "id": 1, "info": {"cpus": 2}, "t": 1.0},
    {"e": "start", "w": 1, "tasks": [1, [0, 1]], "t": 2.0},
    {"e": "done", "w": 1, "r": [[1, 0, 0, 0, 2.0, 3.0, None], [1, 1, 0, 0, 2.0, 3.0, None]],
     "t": 3.0},
    {"e": "start", "w": 1, "tasks": [2, [0]], "t": 3.0},
]


def test_write_and_restore(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(read_events(path)) == EVENTS
    state, reader = restore_file(path)
    assert state.jobs[1].done and not state.jobs[2].done
    assert not reader.torn and reader.count == len(EVENTS)


def test_torn_last_record_is_tolerated_and_cut(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])
    state, reader = restore_file(path)
    assert reader.torn and reader.count == len(EVENTS) - 1
    w = JournalWriter(path)
    w.prepare(reader.good_end)
    w.append({"e": "server", "t": 9.0})
    w.close()
    assert [e["e"] for e in read_events(path)][-2:] == ["done", "server"]


def test_not_ours_and_unknown_version(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("my precious notes\n")
    with pytest.raises(JournalError, match="not an hpcqueue journal"):
        list(read_events(other))
    with pytest.raises(JournalError, match="not an hpcqueue journal"):
        JournalWriter(other).prepare(None)
    assert other.read_text() == "my precious notes\n"
    future = tmp_path / "future"
    future.write_bytes(HEADER.pack(MAGIC, 99))
    with pytest.raises(JournalError, match="version 99"):
        list(read_events(future))


def test_damage_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    data = bytearray(path.read_bytes())
    data[HEADER.size] = 0x05  # an integer where a map should be
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match="not an event|damaged"):
        restore_file(path)


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "j"
    w = JournalWriter(path)
    w.prepare(None)
    with pytest.raises(JournalError, match="in use"):
        JournalWriter(path)
    w.close()


def test_export_is_ndjson(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    out = io.StringIO()
    assert export(path, out) == len(EVENTS)
    lines = out.getvalue().splitlines()
    assert [json.loads(x) for x in lines] == EVENTS


def test_prune_drops_finished_jobs_and_keeps_ids(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    dropped, before, after = prune(path)
    assert dropped == 1 and before == len(EVENTS)
    state, _ = restore_file(path)
    assert sorted(state.jobs) == [2]
    assert state.next_job_id == 3
    assert state.jobs[2].counts[1] == 1  # its running task survived
