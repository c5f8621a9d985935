"""%{HASH}: one folder per parameter set, the same name whatever the order of keys, on the
worker (paths it opens) and in `job cat` (paths the server resolves)."""

import hashlib
import json
import os

SETS = [{"alpha": 1, "beta": "x"}, {"alpha": 2, "beta": "x"},
        {"alpha": 1, "beta": "y", "gamma": [1, {"b": 2, "a": 1}]}]


def expected_hash(value) -> str:
    """What the user guide says is hashed for a --from-json element, computed apart."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reordered(value):
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_parameter_sets_make_one_folder_each_and_the_same_names_again(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    first = tmp_path / "params.json"
    first.write_text(json.dumps(SETS))
    again = tmp_path / "again.json"  # keys in another order, and other whitespace
    again.write_text(json.dumps([reordered(s) for s in SETS], indent=3))
    assert again.read_text() != first.read_text()
    for n, path in enumerate((first, again), 1):
        cluster.hq("submit", "--from-json", path, "--stdout", f"out{n}/%{{HASH}}/stdout",
                   "--stderr", "none", "--", "sh", "-c", 'echo "$HPCQUEUE_ENTRY"', cwd=tmp_path)
    p = cluster.hq("job", "wait", "1-1000000", timeout=60)
    assert "3 finished" in p.stdout
    names = sorted(os.listdir(tmp_path / "out1"))
    assert len(names) == 3 and names == sorted(os.listdir(tmp_path / "out2"))
    assert names == sorted(expected_hash(s) for s in SETS)
    for s in SETS:  # each folder holds its own parameter set's output
        for n in (1, 2):
            out = (tmp_path / f"out{n}" / expected_hash(s) / "stdout").read_text()
            assert json.loads(out) == s
    # `job cat` resolves the same paths on the server
    p = cluster.hq("job", "cat", "2", "stdout")
    assert sorted(json.loads(line)["alpha"] for line in p.stdout.splitlines()) == [1, 1, 2]
    assert "could not be read" not in p.stderr


def test_hash_in_cwd_and_for_lines_and_array_tasks(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "2")
    lines = tmp_path / "lines.txt"
    lines.write_text("a 1\nb 2\n")
    line_hashes = [hashlib.sha256(x.encode()).hexdigest()[:12] for x in ("a 1", "b 2")]
    for h in line_hashes:  # --cwd is not made by the worker (issue 14): made here
        (tmp_path / "runs" / h).mkdir(parents=True)
    cluster.hq("submit", "--each-line", lines, "--cwd", "runs/%{HASH}", "--stdout", "here",
               "--stderr", "none", "--", "sh", "-c", "pwd", cwd=tmp_path)
    cluster.hq("submit", "--array", "1-2", "--stdout", "arr/%{HASH}", "--stderr", "none",
               "--", "echo", "hi", cwd=tmp_path)
    p = cluster.hq("job", "wait", "1-1000000", timeout=60)
    assert "2 finished" in p.stdout and "failed" not in p.stdout, p.stdout
    for h in line_hashes:
        assert (tmp_path / "runs" / h / "here").read_text().strip() == \
            str(tmp_path / "runs" / h)
    array_hashes = sorted(
        hashlib.sha256(json.dumps([["echo", "hi"], t], separators=(",", ":")).encode())
        .hexdigest()[:12] for t in (1, 2))
    assert sorted(os.listdir(tmp_path / "arr")) == array_hashes
    assert cluster.hq("job", "cat", "1", "stdout").stdout.splitlines() == [
        str(tmp_path / "runs" / h) for h in line_hashes]
