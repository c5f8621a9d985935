"""Compaction figures: a journal of every event against a snapshot of the same state.

Run from the repository root:

    python3 benchmarks/compaction.py            # 1,000,000 finished tasks, ~half a minute
    python3 benchmarks/compaction.py --quick    # 100,000

Everything runs in this process, with no server and no network.  The state is one array
job whose tasks a few workers started and finished, journaled as a live server journals
them: a `start` event per batch handed to a worker (a few hundred tasks), a `done` event
per batch of results, each event one frame (`JournalWriter.write`, as `Core.record`
does).  The same state is then written as compaction writes it (`snapshot.iter_dump`
through `tools.write_journal`).  Printed for each file: its size, bytes per finished task,
and the time to restore it, split into reading (checksums, msgpack unpack) and applying
the events to a new state; then whether both restores give the same state (their
snapshots pack to the same bytes).  Figures next to targets; a missed target never
changes the exit code.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgpack

import hpcqueue
from hpcqueue.journal import JournalWriter
from hpcqueue.journal.reader import JournalReader, replay
from hpcqueue.journal.snapshot import dump, iter_dump
from hpcqueue.journal.tools import write_journal
from hpcqueue.model import FINISHED
from hpcqueue.state import ServerState

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import heading, job_spec, line

TARGET_RESTORE = 0.5  # seconds to restore the snapshot
TARGET_BYTES = 32  # snapshot bytes per finished task


# ---------------------------------------------------------------- the state


def build(path: Path, n: int, workers: int, batch: int, results: int) -> tuple[ServerState, int]:
    """Journal (to PATH) and apply the events of N tasks run by WORKERS workers: a `start`
    of BATCH tasks per worker per round, results in `done` events of RESULTS each, tasks
    running about 0.1 s.  Returns the state and the number of events."""
    state = ServerState()
    writer = JournalWriter(path, fsync_interval=3600)
    writer.prepare(None)
    count = 0

    def record(ev: dict) -> None:
        nonlocal count
        writer.write([ev])
        state.apply(ev)
        state.just_done.clear()
        count += 1

    t = 1.7e9
    record({"e": "server", "t": t, "v": hpcqueue.__version__})
    record({"e": "job", "id": 1, "spec": job_spec(n, "/home/user/run"), "t": t})
    for wid in range(1, workers + 1):
        record({"e": "worker", "id": wid, "t": t, "info": {
            "hostname": f"node{wid:03d}", "pid": 4000 + wid, "cpus": batch,
            "version": hpcqueue.__version__}})
    cursor = 0
    while cursor < n:
        started = []
        for wid in range(1, workers + 1):
            idxs = list(range(cursor, min(n, cursor + batch)))
            if not idxs:
                break
            cursor += len(idxs)
            t += 0.003
            record({"e": "start", "w": wid, "tasks": [1, idxs], "t": t})
            started.append((wid, idxs, t))
        for wid, idxs, t_start in started:
            for k in range(0, len(idxs), results):
                rows = []
                for i in idxs[k:k + results]:
                    t0 = t_start + 0.001 * (i % 7)
                    rows.append([1, i, 0, 0, t0, t0 + 0.08 + 0.00001 * (i % 4001), None])
                t += 0.002
                record({"e": "done", "w": wid, "r": rows, "t": t})
    writer.close()
    return state, count


# ---------------------------------------------------------------- restoring


def restore_timed(path: Path) -> tuple[ServerState, float, float, int]:
    """(state, seconds reading, seconds applying, events) of a journal file."""
    gc.collect()
    t0 = time.perf_counter()
    events = list(JournalReader(path))
    t1 = time.perf_counter()
    state = replay(events, path)
    t2 = time.perf_counter()
    return state, t1 - t0, t2 - t1, len(events)


def restore_figures(path: Path, n: int, repeat: int, target: bool) -> ServerState:
    reads, applies, totals = [], [], []
    for _ in range(repeat):
        state, read, apply, count = restore_timed(path)
        reads.append(read)
        applies.append(apply)
        totals.append(read + apply)
        if state.jobs[1].counts[FINISHED] != n:
            raise RuntimeError(f"restore of {path} finished {state.jobs[1].counts} tasks")
        if len(totals) < repeat:
            del state
    line("events in the file", f"{count:,}")
    line("restore: read (checksums, unpack)", seconds(reads))
    line("restore: apply", seconds(applies))
    line("restore: total", seconds(totals), f"< {TARGET_RESTORE} s" if target else None)
    return state


def seconds(runs: list[float]) -> str:
    text = f"{statistics.median(runs):.3f} s"
    if len(runs) > 1:
        text += f" ({min(runs):.3f}..{max(runs):.3f})"
    return text


def packed(events) -> bytes:
    pack = msgpack.Packer(use_bin_type=True).pack
    return b"".join(pack(ev) for ev in events)


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 tasks instead of 1,000,000")
    ap.add_argument("--tasks", type=int, help="finished tasks of the array job")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256, help="tasks per `start` event")
    ap.add_argument("--results", type=int, default=64, help="results per `done` event")
    ap.add_argument("--repeat", type=int, default=3, help="restores of each file (median)")
    ap.add_argument("--tmpdir", help="where the journals go")
    args = ap.parse_args(argv)
    n = args.tasks or (100_000 if args.quick else 1_000_000)
    repeat = max(1, args.repeat)
    root = Path(tempfile.mkdtemp(prefix="hpcqueue-compaction-", dir=args.tmpdir))
    try:
        print("hpcqueue compaction benchmark", time.strftime("%Y-%m-%d %H:%M:%S"))
        print(f"  hpcqueue {hpcqueue.__version__} ({Path(hpcqueue.__file__).parent}), "
              f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
        print(f"  {n:,} tasks of one array job, finished by {args.workers} workers: `start` "
              f"events of {args.batch} tasks, `done` events of {args.results} results; "
              f"{repeat} restore(s) per file, temp dir {root}", flush=True)

        heading("1. The journal as the server writes it: every event, one frame each")
        full = root / "journal.full"
        t0 = time.perf_counter()
        live, count = build(full, n, args.workers, args.batch, args.results)
        line("events journaled", f"{count:,}")
        line("time to apply and write them", f"{time.perf_counter() - t0:.2f} s")
        size = full.stat().st_size
        line("journal size", f"{size / 2**20:.1f} MiB")
        line("bytes per finished task", f"{size / n:.2f}")
        from_full = restore_figures(full, n, repeat, target=False)
        del from_full

        heading("2. The same state as a snapshot (what compaction writes)")
        snap = root / "journal.snap"
        gc.collect()
        t0 = time.perf_counter()
        size = write_journal(snap, iter_dump(live))
        line("compaction: iter_dump + pack + write + fsync", f"{time.perf_counter() - t0:.3f} s")
        events = dump(live)
        line("events", ", ".join(ev["e"] for ev in events))
        line("largest event, packed", f"{max(len(packed([ev])) for ev in events) / 2**20:.1f} MiB")
        del events
        line("journal size", f"{size / 2**20:.1f} MiB")
        line("bytes per finished task", f"{size / n:.2f}", f"< {TARGET_BYTES}")
        from_snap = restore_figures(snap, n, repeat, target=True)

        heading("3. Check")
        from_full = restore_timed(full)[0]
        same = packed(dump(from_full)) == packed(dump(from_snap)) == packed(dump(live))
        line("both restores give the live state", "yes" if same else "NO")
        line("size of the snapshot / the full journal",
             f"{snap.stat().st_size / full.stat().st_size:.2f}")
        return 0 if same else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
