"""The journal under faults, from outside: bit flips, a full disk, kill -9.

- 1,000 random single-bit flips of a journal written by a real server: each restores exactly
  the original state, or refuses with a byte offset; a flip in the last frame may drop just
  that frame.  No silent change, no silent cut, no traceback.
- A journal on a small tmpfs: while the disk stays full the server stays up and refuses
  submits with one clear error, then resumes by itself; when space comes back at once, a
  restart recovers every acknowledged submit.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import in_ci, wait_for
from hpcqueue.access import connect
from hpcqueue.exceptions import JournalError
from hpcqueue.journal import restore_file
from hpcqueue.journal.format import FRAME_LEN, HEADER_LEN


def fingerprint(state) -> dict:
    """Everything the state holds, as plain comparable values."""
    jobs = {}
    for j in state.jobs.values():
        cols = None
        if j.state is not None:
            cols = tuple(bytes(c) for c in (j.state, j.starts, j.crashes, j.retries, j.exit,
                                            j.worker, j.t0, j.t1))
        jobs[j.id] = (j.summary(), j.spec, j.cursor, list(j.requeued), dict(j.errors),
                      j.mean_runtime, cols)
    workers = {w.id: (w.summary(), sorted(w.tasks), w.used_cpus, dict(w.used_res))
               for w in state.workers.values()}
    queues = {q.id: (q.state, q.params.to_dict() if hasattr(q.params, "to_dict") else None,
                     sorted((a.id, a.state, a.job_id) for a in q.allocations.values()))
              for q in state.alloc.queues.values()}
    return {"jobs": jobs, "workers": workers, "queues": queues,
            "ids": (state.next_job_id, state.next_worker_id), "ready": sorted(state.ready)}


@pytest.fixture(scope="module")
def real_journal(tmp_path_factory):
    """A journal written by a real server: jobs that finish, fail, retry and are canceled."""
    from conftest import Cluster

    tmp = tmp_path_factory.mktemp("flips")
    c = Cluster(tmp)
    journal = tmp / "journal"
    try:
        c.start_server("--journal", journal)
        c.start_worker("--cpus", "2")
        c.hq("submit", "--array", "1-3000", "--stdout", "none", "--", "true")
        c.hq("submit", "--array", "1-10", "--max-retries", "1", "--stdout", "none", "--",
             "bash", "-c", "exit $((HPCQUEUE_TASK_ID % 3))")
        c.hq("submit", "--each-line", "/dev/null", check=False)
        c.hq("job", "wait", "1-1000000", check=False, timeout=60)
        c.hq("submit", "--array", "1-5", "--stdout", "none", "--", "sleep", "30")
        wait_for(lambda: '"running": 0' not in c.hq("job", "info", "last", "--output",
                                                    "json").stdout, what="a running task")
        c.hq("job", "cancel", "last")
        c.hq("server", "stop")
        c.server.wait(timeout=20)
    finally:
        c.close()
    return journal.read_bytes()


def frames(data: bytes) -> list[int]:
    out, off = [], HEADER_LEN
    while off < len(data):
        out.append(off)
        off += FRAME_LEN + int.from_bytes(data[off + 4:off + 8], "little")
    assert off == len(data)
    return out


def test_single_bit_flips_never_change_the_state_silently(real_journal, tmp_path):
    data = real_journal
    offsets = frames(data)
    assert len(offsets) > 20
    last = offsets[-1]
    path = tmp_path / "j"
    path.write_bytes(data)
    original = fingerprint(restore_file(path)[0])
    path.write_bytes(data[:last])
    without_last = fingerprint(restore_file(path)[0])
    rng = random.Random(20261124)
    outcomes = {"same": 0, "refused": 0, "last dropped": 0}
    for _ in range(1000):
        pos = rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        try:
            state, reader = restore_file(path)
        except JournalError as e:
            assert "byte" in str(e), f"flip at {pos}: {e}"
            outcomes["refused"] += 1
            continue
        got = fingerprint(state)
        if got == original:
            # a flip the format ignores: only the header's reserved bytes... and nothing else
            assert not reader.torn, f"flip at {pos} was cut"
            outcomes["same"] += 1
        else:
            assert pos >= last and reader.torn and got == without_last, (
                f"flip at byte {pos} changed the state silently")
            outcomes["last dropped"] += 1
    print(f"1000 single-bit flips of a {len(data):,}-byte journal ({len(offsets)} frames): "
          f"{outcomes}")
    assert outcomes["refused"] > 900


def test_a_damaged_journal_is_refused_by_the_server_without_a_traceback(real_journal,
                                                                         tmp_path):
    from conftest import hq

    data = bytearray(real_journal)
    data[frames(bytes(data))[3] + FRAME_LEN + 1] ^= 0x10
    path = tmp_path / "j"
    path.write_bytes(bytes(data))
    p = hq("server", "start", "--journal", path, server_dir=tmp_path / "sd", check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "damaged at byte" in p.stderr and "journal repair" in p.stderr
    assert path.read_bytes() == bytes(data)
    c = hq("journal", "check", path, check=False)
    assert c.returncode == 1 and "damaged: bytes" in c.stdout
    r = hq("journal", "repair", path)
    assert "lost bytes" in r.stdout
    assert hq("journal", "check", path).returncode == 0


# ------------------------------------------------------------------ a full disk

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 512 KiB tmpfs (root only; in CI a missing mount is a failure)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        message = f"cannot mount a tmpfs ({p.stderr.strip()}): the disk-full tests need root"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path) -> Path:
    """Fill the file system up; returns the filler."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


class Submitter:
    """Submits one-task jobs over one connection; remembers which were acknowledged."""

    def __init__(self, server_dir):
        self.conn = connect(server_dir, timeout=10)
        self.acked: list[int] = []
        self.errors: list[str] = []

    def submit(self, n=1) -> bool:
        spec = {"cmd": ["true"], "ids": [[0, n - 1, 1]], "name": "x" * 200}
        self.conn.send({"op": "submit", "spec": spec})
        reply = self.conn.recv()
        if reply.get("ok"):
            self.acked.append(reply["job"])
            return True
        self.errors.append(reply["error"])
        return False

    def close(self):
        self.conn.close()


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "ERROR" in line]


@pytest.mark.parametrize("round_", range(10))
def test_disk_full_that_stays_full(cluster, small_tmpfs, round_):
    journal = small_tmpfs / "journal"
    cluster.start_server("--journal", journal)
    s = Submitter(cluster.server_dir)
    assert s.submit()
    filler = fill(small_tmpfs)
    for _ in range(200):  # the journal's last page may still have room for a few
        if not s.submit():
            break
    for _ in range(20):
        assert not s.submit()
    assert cluster.server.poll() is None, "the server died on a full disk"
    assert "cannot be written (No space left on device)" in s.errors[0]
    assert "nothing accepted before it was lost" in s.errors[0]
    log = cluster.log("server.log")
    assert len(error_lines(log)) == 1 and "Traceback" not in log
    filler.unlink()
    wait_for(s.submit, timeout=10, interval=0.2, what="submits accepted again")
    assert "can be written again" in cluster.log("server.log")
    assert not lost_after_kill_9(cluster, journal, s)


def lost_after_kill_9(cluster, journal, submitter) -> set[int]:
    """Acknowledged submits missing after a kill -9 and a restart on the journal."""
    acked = set(submitter.acked)
    submitter.close()
    kill_and_restart(cluster, journal)
    return acked - {j["id"] for j in cluster_jobs(cluster)}


def cluster_jobs(cluster):
    import json

    return json.loads(cluster.hq("job", "list", "--output", "json").stdout)


@pytest.mark.parametrize("round_", range(10))
def test_disk_full_then_space_at_once_loses_no_acknowledged_submit(cluster, small_tmpfs,
                                                                    round_):
    journal = small_tmpfs / "journal"
    cluster.start_server("--journal", journal)
    s = Submitter(cluster.server_dir)
    filler = small_tmpfs / "filler"
    f = open(filler, "wb", buffering=0)
    refused_at = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if refused_at is None:
            try:  # fill the disk a little at a time while submitting
                f.write(b"\0" * 8192)
            except OSError:
                pass
        if not s.submit() and refused_at is None:
            refused_at = time.monotonic()
            time.sleep(0.005)
            f.close()
            filler.unlink()  # space comes back about 5 ms after the first refusal
        if refused_at is not None and len(s.acked) >= 3 and time.monotonic() - refused_at > 1.5:
            break
    assert refused_at is not None, "the disk never filled up"
    missing = lost_after_kill_9(cluster, journal, s)
    assert not missing, f"acknowledged submits lost after the restart: {sorted(missing)}"
    assert "Traceback" not in cluster.log("server.log")


# ------------------------------------------------------------------ the live stream

def test_journal_stream_shows_a_submit_within_a_second(cluster):
    import json
    import select

    cluster.start_server()
    env = dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir))
    stream = subprocess.Popen([sys.executable, "-m", "hpcqueue", "journal", "stream"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              start_new_session=True)
    cluster.procs.append(stream)
    assert b"streaming the events" in stream.stderr.readline()
    t0 = time.monotonic()
    cluster.hq("submit", "--name", "streamed", "--", "true")
    seen = None
    while time.monotonic() - t0 < 5 and seen is None:
        ready, _, _ = select.select([stream.stdout], [], [], 5)
        if ready:
            ev = json.loads(stream.stdout.readline())
            if ev["e"] == "job":
                seen = time.monotonic() - t0
                assert ev["spec"]["name"] == "streamed"
    assert seen is not None and seen < 1.0, seen


# ------------------------------------------------------------------ kill -9, many times

def kill_and_restart(cluster, journal):
    os.killpg(cluster.server.pid, signal.SIGKILL)
    cluster.server.wait()
    cluster.start_server("--journal", journal)


def assert_every_task_finished_once(cluster, n):
    import json

    p = cluster.hq("job", "wait", "1-1000000", timeout=300)
    assert f"{n} finished" in p.stdout, p.stdout
    tasks = json.loads(cluster.hq("task", "list", "1", "--output", "json", timeout=120).stdout)
    assert len(tasks) == n and {t["state"] for t in tasks} == {"finished"}
    assert len({t["id"] for t in tasks}) == n


def test_kill_9_twenty_times_during_a_10000_task_run(cluster, tmp_path):
    journal = tmp_path / "journal"
    n = 10_000
    cluster.start_server("--journal", journal)
    for k in range(2):
        cluster.start_worker("--cpus", "2", "--on-server-lost", "reconnect",
                             name=f"worker{k}.log")
    cluster.hq("submit", "--array", f"1-{n}", "--stdout", "none", "--stderr", "none", "--",
               "sleep", "0.01")
    rng = random.Random(9)
    for _ in range(20):
        time.sleep(rng.uniform(0.3, 0.9))
        kill_and_restart(cluster, journal)
    import json

    left = json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
    assert left["finished"] < n, "the run ended before the 20 kills: make its tasks longer"
    assert_every_task_finished_once(cluster, n)


# ------------------------------------------------------------------ compaction

def test_compaction_live_and_kill_9_during_it(cluster, tmp_path):
    """A live `journal compact` keeps the state; kill -9 at any moment of a compaction leaves
    a journal that restores: 10 kills while compactions run, then every task once."""
    import json

    journal = tmp_path / "journal"
    n = 4000
    cluster.start_server("--journal", journal)
    cluster.start_worker("--cpus", "2", "--on-server-lost", "reconnect")
    cluster.hq("submit", "--array", f"1-{n}", "--stdout", "none", "--stderr", "none", "--",
               "sleep", "0.01")
    wait_for(lambda: json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
             ["finished"] > 200, what="some tasks to finish")
    before = json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
    p = cluster.hq("journal", "compact")
    assert "compacted" in p.stdout
    after = json.loads(cluster.hq("job", "info", "1", "--output", "json").stdout)
    assert after["finished"] >= before["finished"] and after["tasks"] == n
    env = dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir))
    rng = random.Random(10)
    for _ in range(10):
        compacting = subprocess.Popen(
            [sys.executable, "-m", "hpcqueue", "journal", "compact"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.4))  # before, during or after the request
        kill_and_restart(cluster, journal)
        compacting.wait(timeout=60)
        assert not os.path.exists(f"{journal}.tmp")
    assert_every_task_finished_once(cluster, n)
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600


def big_journal(path, tasks=300_000, batch=500):
    """A journal of one TASKS-task array run to the end in batches, as a server writes it."""
    from hpcqueue.journal import JournalWriter

    w = JournalWriter(path)
    w.prepare(None)
    w.write([{"e": "server", "t": 1.0},
             {"e": "job", "id": 1, "spec": {"cmd": ["true"], "ids": [[1, tasks, 1]]}, "t": 1.0},
             {"e": "worker", "id": 1, "info": {"cpus": 2}, "t": 1.0}])
    t = 2.0
    for lo in range(0, tasks, batch):
        idx = list(range(lo, min(lo + batch, tasks)))
        w.write([{"e": "start", "w": 1, "tasks": [1, idx], "t": t}])
        w.write([{"e": "done", "w": 1, "t": t + 0.5,
                  "r": [[1, i, 0, i % 7 == 0, t, t + 0.5, None] for i in idx]}])
        t += 1
    w.close()


def test_kill_9_at_any_moment_of_a_rewrite_leaves_a_journal_that_restores(tmp_path):
    journal = tmp_path / "journal"
    big_journal(journal)
    original = fingerprint(restore_file(journal)[0])
    clean = tmp_path / "clean"
    clean.write_bytes(journal.read_bytes())
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "hpcqueue", "journal", "compact", clean], check=True,
                   capture_output=True)
    took = time.monotonic() - t0
    assert fingerprint(restore_file(clean)[0]) == original
    assert clean.stat().st_size < 32 * 300_000  # bytes per finished task
    rng = random.Random(11)
    for _ in range(10):
        p = subprocess.Popen([sys.executable, "-m", "hpcqueue", "journal", "compact", journal],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, took))
        p.kill()
        p.wait()
        assert fingerprint(restore_file(journal)[0]) == original
        tmp = Path(f"{journal}.tmp")
        assert not tmp.exists() or stat.S_IMODE(tmp.stat().st_mode) == 0o600
