"""Streamed output (`submit --stream DIR`, hpcqueue/streamlog.py): the framing on its own
(round trip, torn tail, bit flips), then real workers and the real `job cat`."""

import json
import os
import signal
import subprocess
import sys

from conftest import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcqueue import streamlog
from hpcqueue.streamlog import HEADER_LEN, INDEX_SUFFIX, LOG_SUFFIX, JobLogs, LogWriter

BOUNDED = settings(max_examples=60, deadline=None, database=None)

# ------------------------------------------------------------------ the framing

# a run of one worker: tasks that start, write chunks to stdout (1) or stderr (2) and end,
# interleaved as tasks running side by side interleave
chunk = st.tuples(st.integers(0, 3), st.sampled_from([1, 2]), st.binary(max_size=40))
runs = st.lists(chunk, max_size=30)


def write_run(directory, steps, job=7) -> dict:
    """Write STEPS (slot, stream, data) with LogWriter: each of 4 slots runs tasks one after
    another, a task ending when the next chunk of its slot comes (or at the end).
    Returns {(task, instance): {1: [chunks], 2: [chunks]}} in write order."""
    w = LogWriter(str(directory), "1-0")
    written: dict = {}
    slot_task: dict = {}
    next_task = 0

    def start(slot):
        nonlocal next_task
        task = (next_task, next_task % 2)
        next_task += 1
        slot_task[slot] = (task, w.offset, 0)
        written[task] = {1: [], 2: []}

    def end(slot, code):
        task, first, _ = slot_task.pop(slot)
        w.end(job, task[0], task[1], code, first)

    for k, (slot, stream, data) in enumerate(steps):
        if slot not in slot_task:
            start(slot)
        task, first, count = slot_task[slot]
        w.chunk(job, task[0], task[1], stream, data)
        written[task][stream].append(data)
        if count >= 1 and k % 3 == 0:  # end it: the slot's next chunk starts a new task
            end(slot, k % 5)
        else:
            slot_task[slot] = (task, first, count + 1)
    for slot in list(slot_task):
        end(slot, 0)
    w.close()
    return written


def read_all(directory, stream="stdout", **kw):
    with JobLogs(str(directory)) as logs:
        got = {(e.task, e.instance): logs.output(e, stream).data
               for e in logs.ended(all_instances=True, **kw)}
        return got, logs.damage


def is_subsequence_concat(data: bytes, chunks: list) -> bool:
    """Whether DATA is the concatenation of some of CHUNKS, in order (damage drops
    chunks, never invents or reorders bytes)."""
    if data == b"".join(chunks):
        return True
    memo = {}

    def fit(i, k):
        if i == len(data):
            return True
        if k == len(chunks):
            return False
        if (i, k) not in memo:
            c = chunks[k]
            memo[(i, k)] = (bool(c) and data.startswith(c, i) and fit(i + len(c), k + 1)) \
                or fit(i, k + 1)
        return memo[(i, k)]

    return fit(0, 0)


@BOUNDED
@given(runs)
def test_round_trip_gives_each_task_its_own_streams(tmp_path_factory, steps):
    d = tmp_path_factory.mktemp("log")
    written = write_run(d, steps)
    for stream, key in (("stdout", 1), ("stderr", 2)):
        got, damage = read_all(d, stream)
        assert got == {t: b"".join(c[key]) for t, c in written.items()}
        assert damage.message() is None
    with JobLogs(str(d)) as logs:  # ended tasks come in task order, each with its code
        assert [(e.task, e.instance) for e in logs.ended(all_instances=True)] == sorted(written)


def frames(whole: bytes) -> list:
    """(start, end, payload) of each frame of an intact log."""
    out = []
    for pos, item in streamlog.scan(whole, HEADER_LEN, len(whole), streamlog.Damage(), ""):
        length = int.from_bytes(whole[pos + 4:pos + 8], "little")
        out.append((pos, pos + streamlog.FRAME_LEN + length, item))
    return out


@BOUNDED
@given(runs, st.data())
def test_torn_tail_loses_only_what_was_cut(tmp_path_factory, steps, data):
    d = tmp_path_factory.mktemp("log")
    written = write_run(d, steps)
    log = d / ("1-0" + LOG_SUFFIX)
    whole = log.read_bytes()
    cut = data.draw(st.integers(HEADER_LEN, len(whole)))
    log.write_bytes(whole[:cut])
    index = d / ("1-0" + INDEX_SUFFIX)  # the index may be cut anywhere too
    index.write_bytes(index.read_bytes()[:data.draw(st.integers(0, index.stat().st_size))])
    got, damage = read_all(d)
    ended = {(item[2], item[3]) for _, end, item in frames(whole)
             if item[0] == streamlog.END and end <= cut}
    # whatever ended before the cut is all there; nothing else is
    assert got == {key: b"".join(written[key][1]) for key in ended}
    # the bytes skipped are those of the frame the cut tore, no more
    torn = [start for start, end, _ in frames(whole) if start < cut < end]
    assert damage.skipped == (cut - torn[0] if torn else 0)


@BOUNDED
@given(runs.filter(lambda s: len(s) > 0), st.data())
def test_a_flipped_bit_is_skipped_and_reported_never_printed(tmp_path_factory, steps, data):
    d = tmp_path_factory.mktemp("log")
    written = write_run(d, steps)
    target = d / ("1-0" + data.draw(st.sampled_from([LOG_SUFFIX, INDEX_SUFFIX])))
    raw = bytearray(target.read_bytes())
    if not raw:
        return
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    target.write_bytes(bytes(raw))
    got, damage = read_all(d, "stdout")
    assert damage.message() is not None  # found, whichever byte it was
    for key, out in got.items():
        assert is_subsequence_concat(out, written[key][1]), (key, out)
    if target.suffix == INDEX_SUFFIX:  # the log is intact: the index is only a cache
        assert got == {t: b"".join(c[1]) for t, c in written.items()}


def test_tail_lines():
    assert streamlog.tail_lines(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert streamlog.tail_lines(b"a\nb\nc", 2) == b"b\nc"
    assert streamlog.tail_lines(b"a\n", 5) == b"a\n"
    assert streamlog.tail_lines(b"a\nb\n", 0) == b""


# ------------------------------------------------------------------ real workers


def job_info(cluster, ref="1"):
    return json.loads(cluster.hq("job", "info", ref, "--output", "json").stdout)


def logs_of(d, job=1):
    names = sorted(os.listdir(d / f"job-{job}"))
    return [n for n in names if n.endswith(LOG_SUFFIX)], [
        n for n in names if n.endswith(INDEX_SUFFIX)]


def hq_pipe(cluster, shell: str) -> subprocess.CompletedProcess:
    """`hpcqueue ...` inside a shell pipeline (`| head -1`)."""
    env = dict(os.environ, HPCQUEUE_SERVER_DIR=str(cluster.server_dir))
    return subprocess.run(["sh", "-c", shell.replace("hpcqueue", f"{sys.executable} -m hpcqueue")],
                          capture_output=True, text=True, env=env, timeout=60)


TASK = ('echo "out $HPCQUEUE_TASK_ID"; echo "err $HPCQUEUE_TASK_ID" >&2; seq 1 3000; '
        'sleep 0.05; exit $((HPCQUEUE_TASK_ID % 10 == 0))')


def test_stream_on_two_workers_reads_back_in_task_order(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "1", name="w1.log")
    cluster.start_worker("--cpus", "1", name="w2.log")
    wait_for(lambda: len(cluster.workers()) == 2, what="two workers")
    p = cluster.hq("submit", "--array", "1-30", "--stream", "logs", "--", "sh", "-c", TASK,
                   cwd=tmp_path)
    assert "job 1 submitted" in p.stdout
    cluster.hq("job", "wait", "1", check=False, timeout=60)
    assert job_info(cluster)["failed"] == 3
    logs, indexes = logs_of(tmp_path / "logs")
    assert len(logs) == 2 and len(indexes) == 2  # a log (and its index) per worker
    assert not list(tmp_path.glob("job-1"))  # and no file per task

    out = cluster.hq("job", "cat", "1", "stdout").stdout.splitlines()
    assert [line for line in out if line.startswith("out")] == [f"out {i}" for i in range(1, 31)]
    assert len(out) == 30 * 3001
    err = cluster.hq("job", "cat", "1", "stderr")
    assert err.stdout.splitlines() == [f"err {i}" for i in range(1, 31)]
    assert err.stderr == ""

    some = cluster.hq("job", "cat", "1", "stderr", "--tasks", "5-7,20").stdout
    assert some.splitlines() == ["err 5", "err 6", "err 7", "err 20"]
    failed = cluster.hq("job", "cat", "1", "stderr", "--failed").stdout
    assert failed.splitlines() == ["err 10", "err 20", "err 30"]
    tail = cluster.hq("job", "cat", "1", "stdout", "--tail", "2", "--tasks", "3-4").stdout
    assert tail.splitlines() == ["2999", "3000", "2999", "3000"]
    both = cluster.hq("job", "cat", "1", "stderr", "--failed", "--tasks", "1-15").stdout
    assert both.splitlines() == ["err 10"]

    head = hq_pipe(cluster, "hpcqueue job cat 1 stdout | head -1")
    assert head.stdout == "out 1\n"
    assert head.stderr == ""

    # a streamed job's output cannot also go to files
    bad = cluster.hq("submit", "--stream", "logs", "--stdout", "x", "--", "true", check=False)
    assert bad.returncode != 0
    assert "--stream cannot be combined with --stdout" in bad.stderr
    assert "Traceback" not in bad.stderr


PRINTER = 'for i in $(seq 1 40); do echo "task $HPCQUEUE_TASK_ID line $i"; sleep 0.01; done'


def test_kill_9_of_a_worker_loses_no_completed_output(cluster, tmp_path):
    cluster.start_server("--heartbeat", "1s")
    doomed = cluster.start_worker("--cpus", "2", name="doomed.log")
    wait_for(lambda: len(cluster.workers()) == 1, what="a worker")
    cluster.hq("submit", "--array", "1-12", "--stream", "logs", "--", "sh", "-c", PRINTER,
               cwd=tmp_path)
    wait_for(lambda: job_info(cluster)["finished"] >= 3, timeout=60, what="3 finished tasks")
    os.kill(doomed.pid, signal.SIGKILL)  # mid-job: two tasks are printing
    doomed.wait(timeout=10)
    logs, _ = logs_of(tmp_path / "logs")
    dead_log = tmp_path / "logs" / "job-1" / logs[0]
    # a kill -9 between two write() calls leaves whole frames; a write cut short (a node
    # that went down, a full disk) leaves part of one: the torn tail the reader must skip
    torn = streamlog.frame(b"x" * 50)
    with open(dead_log, "ab") as f:
        f.write(torn + b"x" * 20)
    cluster.start_worker("--cpus", "2", name="rescue.log")
    cluster.hq("job", "wait", "1", timeout=90)
    p = cluster.hq("job", "cat", "1", "stdout")
    assert p.stdout.splitlines() == [f"task {t} line {i}" for t in range(1, 13)
                                     for i in range(1, 41)]
    assert p.stderr.count("\n") == 1
    assert f"skipped {len(torn) + 20} damaged byte(s) in 1 log file(s)" in p.stderr
    tasks = json.loads(cluster.hq("task", "list", "1", "--output", "json").stdout)
    assert sum(t["crashes"] for t in tasks) >= 1  # some ran again: their latest run is shown


def test_bit_flip_in_a_log_is_skipped_not_printed(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "1")
    cluster.hq("submit", "--array", "1-5", "--stream", "logs", "--", "sh", "-c",
               'printf "task %s says hello\\n" $HPCQUEUE_TASK_ID', cwd=tmp_path)
    cluster.hq("job", "wait", "1", timeout=60)
    logs, _ = logs_of(tmp_path / "logs")
    path = tmp_path / "logs" / "job-1" / logs[0]
    raw = bytearray(path.read_bytes())
    at = raw.index(b"task 3 says")
    raw[at + 5] ^= 0x04  # "3" becomes "7"
    path.write_bytes(bytes(raw))
    p = cluster.hq("job", "cat", "1", "stdout")
    assert p.stdout.splitlines() == [f"task {t} says hello" for t in (1, 2, 4, 5)]
    assert "skipped" in p.stderr and p.stderr.count("\n") == 1


def test_per_task_files_tasks_failed_tail_and_a_closed_pipe(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    cluster.hq("submit", "--array", "1-6", "--", "sh", "-c",
               'seq 1 5000; echo "end $HPCQUEUE_TASK_ID"; exit $((HPCQUEUE_TASK_ID == 4))',
               cwd=tmp_path)
    cluster.hq("job", "wait", "1", check=False, timeout=60)
    (tmp_path / "job-1" / "2.stdout").unlink()  # not written, or cleaned up: no complaint
    p = cluster.hq("job", "cat", "1", "stdout", "--tail", "1")
    assert p.stdout.splitlines() == ["end 1", "end 3", "end 4", "end 5", "end 6"]
    assert p.stderr == ""
    assert cluster.hq("job", "cat", "1", "stdout", "--failed", "--tail", "2").stdout == \
        "5000\nend 4\n"
    assert cluster.hq("job", "cat", "1", "stdout", "--tasks", "5-6", "--tail", "1").stdout == \
        "end 5\nend 6\n"
    head = hq_pipe(cluster, "hpcqueue job cat 1 stdout | head -1")
    assert (head.stdout, head.stderr) == ("1\n", "")
