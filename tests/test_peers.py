"""benchmarks/peers.py runs end to end on a small workload and prints every row.

Timing is never asserted (the figures live in benchmarks/README.md): only that each
contender ran all its tasks and got figures, and that a peer that is not installed is
reported as such instead of failing the run.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peers.py"
HPCQUEUE_ROWS = [
    "hpcqueue, 1 worker x 2 cpus, --stdout none",
    "hpcqueue, 1 worker x 2 cpus, default output",
    "hpcqueue, 2 workers x 1 cpu, --stdout none",
    "hpcqueue, 2 workers x 1 cpu, default output",
]
PEER_ROWS = {
    "hyperqueue": ["hyperqueue, 1 worker x 2 cpus", "hyperqueue, 2 workers x 1 cpu"],
    "hypershell": ["hypershell, 1 client x 2 threads"],
}
NUMBER = r"([\d,]+(?:\.\d+)?)"


def summary_row(out: str, label: str) -> str:
    """The summary table's line for `label` (the table follows the '== ' heading)."""
    table = out.split("\n== ", 1)[1]
    lines = [ln for ln in table.splitlines() if ln.startswith(label)]
    assert len(lines) == 1, f"no single summary row for {label!r} in:\n{table}"
    return lines[0]


def figures(row: str) -> tuple[float, float, float]:
    """(tasks/s, share of the floor, own CPU ms per task) of a contender's row of 200 tasks."""
    m = re.search(rf"\s200\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s", row)
    assert m, f"no figures in {row!r}"
    return tuple(float(x.replace(",", "")) for x in m.groups())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peers")
    r = subprocess.run([sys.executable, str(SCRIPT), "--tasks", "200", "--repeat", "1",
                        "--tmpdir", str(tmp)], capture_output=True, text=True, timeout=300,
                       cwd=tmp, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(tmp.iterdir()) == [], "peers.py left files behind"
    return r.stdout


def test_floor_and_hpcqueue_rows_have_figures(smoke_run):
    floor = summary_row(smoke_run, "xargs -P2 (the floor)")
    assert re.search(rf"\s200\s+{NUMBER}", floor), floor
    for label in HPCQUEUE_ROWS:
        rate, share, cpu = figures(summary_row(smoke_run, label))
        assert rate > 0 and share > 0 and cpu >= 0, label
    # each run is printed as it ends, with the machine's load, then its floor run
    assert smoke_run.count("then the floor, xargs -P2") >= len(HPCQUEUE_ROWS)
    assert re.search(r"\[load \d+\.\d\d \d+\.\d\d \d+\.\d\d\]", smoke_run)


@pytest.mark.parametrize("peer", sorted(PEER_ROWS))
def test_peer_row_has_figures_or_says_not_installed(smoke_run, peer):
    for label in PEER_ROWS[peer]:
        row = summary_row(smoke_run, label)
        if importlib.util.find_spec(peer) is None:
            assert "not installed (pip install 'hpcqueue[bench]')" in row, row
        else:
            rate, share, cpu = figures(row)
            assert rate > 0 and share > 0 and cpu > 0, row


def test_unknown_system_is_one_clear_line():
    r = subprocess.run([sys.executable, str(SCRIPT), "--only", "hpcqueue,slurm"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert "--only takes systems from hpcqueue,hyperqueue,hypershell, not 'slurm'" in r.stderr
    assert "Traceback" not in r.stderr
