"""Journal files: header, frames and checksums, torn tails, damage, tools, upgrades."""

import io
import json
import logging
import os
import stat

import msgpack
import pytest

from conftest import hq
from hpcqueue.exceptions import JournalDamaged, JournalError, JournalUnavailable
from hpcqueue.journal import JournalWriter, read_events, restore_file
from hpcqueue.journal.format import FRAME_LEN, HEADER_LEN, MAGIC, V1_HEADER, header
from hpcqueue.journal.tools import check, export, prune, repair, temp_path, upgrade


def write(path, events, per_frame=1):
    w = JournalWriter(path)
    w.prepare(None)
    for k in range(0, len(events), per_frame):
        w.write(events[k:k + per_frame])
    w.close()


def write_v1(path, events):
    pack = msgpack.Packer(use_bin_type=True).pack
    path.write_bytes(V1_HEADER.pack(MAGIC, 1) + b"".join(pack(e) for e in events))


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


def frame_offsets(path) -> list[int]:
    data = path.read_bytes()
    out, off = [], HEADER_LEN
    while off < len(data):
        out.append(off)
        off += FRAME_LEN + int.from_bytes(data[off + 4:off + 8], "little")
    return out


def test_write_and_restore(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(read_events(path)) == EVENTS
    state, reader = restore_file(path)
    assert state.jobs[1].done and not state.jobs[2].done
    assert not reader.torn and reader.count == len(EVENTS)
    assert len(frame_offsets(path)) == len(EVENTS)


def test_an_existing_journal_is_made_private(tmp_path, caplog):
    path = tmp_path / "j"
    write(path, EVENTS)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, "hpcqueue.journal"):
        JournalWriter(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "readable by others" in caplog.text


def test_torn_last_frame_is_cut_with_a_warning(tmp_path, caplog):
    path = tmp_path / "j"
    write(path, EVENTS)
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])
    state, reader = restore_file(path)
    assert reader.torn and reader.count == len(EVENTS) - 1
    last = frame_offsets(path)[-1]
    assert reader.torn_bytes == len(whole) - 3 - last
    with caplog.at_level(logging.WARNING, "hpcqueue.journal"):
        w = JournalWriter(path)
        w.prepare(reader.good_end)
    assert f"{reader.torn_bytes} bytes at byte {last}" in caplog.text
    w.write([{"e": "server", "t": 9.0}])
    w.close()
    assert [e["e"] for e in read_events(path)][-2:] == ["done", "server"]


def test_damage_in_the_middle_refuses_with_the_offset(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS)
    third = frame_offsets(path)[2]
    data = bytearray(path.read_bytes())
    data[third] ^= 0x01  # the first byte of a record: once taken for a torn tail
    path.write_bytes(bytes(data))
    with pytest.raises(JournalDamaged, match=f"damaged at byte {third}") as e:
        restore_file(path)
    assert "journal repair" in str(e.value)
    assert path.read_bytes() == bytes(data)  # nothing was cut


def test_not_ours_and_unknown_version(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("my precious notes\n")
    with pytest.raises(JournalError, match="not an hpcqueue journal"):
        list(read_events(other))
    with pytest.raises(JournalError, match="not an hpcqueue journal"):
        JournalWriter(other).prepare(None)
    assert other.read_text() == "my precious notes\n"
    future = tmp_path / "future"
    future.write_bytes(header(version=99))
    with pytest.raises(JournalError, match="version 99"):
        list(read_events(future))
    damaged = tmp_path / "damaged"
    damaged.write_bytes(header()[:9] + b"\x07" + header()[10:])
    with pytest.raises(JournalError, match="damaged header"):
        list(read_events(damaged))


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "j"
    w = JournalWriter(path)
    w.prepare(None)
    with pytest.raises(JournalError, match="in use"):
        JournalWriter(path)
    w.close()


def test_a_failed_write_is_undone_and_nothing_half_written_stays(tmp_path, monkeypatch):
    path = tmp_path / "j"
    w = JournalWriter(path)
    w.prepare(None)
    w.write(EVENTS[:2])
    size = os.path.getsize(path)
    real = os.pwrite
    calls = []

    def short_then_full(fd, data, off):
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data[:5]), off)  # a short write, as a full disk gives
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", short_then_full)
    with pytest.raises(JournalUnavailable, match="No space left on device"):
        w.write([EVENTS[2]])
    assert os.path.getsize(path) == size
    monkeypatch.setattr(os, "pwrite", real)
    w.write([EVENTS[3]])
    w.close()
    assert list(read_events(path)) == EVENTS[:2] + [EVENTS[3]]


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
    os.chmod(path, 0o600)
    dropped, before, after = prune(path)
    assert dropped == 1 and before == len(EVENTS)
    state, _ = restore_file(path)
    assert sorted(state.jobs) == [2]
    assert state.next_job_id == 3
    assert state.jobs[2].counts[1] == 1  # its running task survived
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(temp_path(path))


def test_check_and_repair_keep_every_intact_record(tmp_path):
    path = tmp_path / "j"
    events = EVENTS + [{"e": "job", "id": 3, "spec": {"cmd": ["true"], "ids": [[0, 0, 1]]},
                        "t": 4.0}]
    write(path, events)
    assert check(path).ok
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[5] + FRAME_LEN + 3] ^= 0x40  # inside the "done" frame
    path.write_bytes(bytes(data))
    report = check(path)
    assert not report.ok and report.middle_damage == [(offsets[5], offsets[6])]
    assert any(f"bytes {offsets[5]:,}-" in line for line in report.lines())
    backup, report, dropped = repair(path)
    assert open(backup, "rb").read() == bytes(data)  # the original is kept
    state, reader = restore_file(path)
    # everything but the damaged "done" frame: job 1's tasks are still running
    assert reader.count == len(events) - 1 and dropped == 0
    assert state.jobs[1].counts[1] == 2 and 3 in state.jobs
    assert check(path).ok


def test_version_1_is_refused_until_upgraded(tmp_path):
    path = tmp_path / "j"
    write_v1(path, EVENTS)
    with pytest.raises(JournalError, match="journal upgrade"):
        restore_file(path)
    p = hq("server", "start", "--journal", path, server_dir=tmp_path / "sd", check=False)
    assert p.returncode == 1 and "--journal-upgrade" in p.stderr and "Traceback" not in p.stderr
    original = path.read_bytes()
    backup, n = upgrade(path)
    assert n == len(EVENTS) and open(backup, "rb").read() == original
    assert list(read_events(path)) == EVENTS


def test_an_event_of_a_newer_release_is_named_as_such(tmp_path):
    path = tmp_path / "j"
    write(path, EVENTS[:2] + [{"e": "teleport", "t": 2.0}])
    with pytest.raises(JournalError, match="'teleport'.*does not know: a newer release"):
        restore_file(path)
    # and a server refuses to start on it with that line, not a traceback
    p = hq("server", "start", "--journal", str(path), server_dir=tmp_path / "sd",
           check=False, timeout=30)
    assert p.returncode != 0 and "newer release" in p.stderr and "Traceback" not in p.stderr
