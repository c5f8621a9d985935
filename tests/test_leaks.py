"""The leak check of conftest.py: a process that a test starts and leaves behind fails the
session, even when it runs in a session of its own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import conftest

LEAKY_TEST = '''
import subprocess, sys

def test_leaves_a_sleeper():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                     start_new_session=True)
'''


def test_a_leftover_process_fails_the_session_and_is_killed(tmp_path):
    shutil.copy(Path(conftest.__file__), tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    out = p.stdout + p.stderr
    assert "1 passed" in out, out
    assert p.returncode == 1, out
    assert "1 process(es) started by the tests outlived the session" in out
    pid = int(out.split("(now killed):")[1].split()[0].rstrip(":"))
    assert not Path(f"/proc/{pid}/cmdline").exists() or \
        not Path(f"/proc/{pid}/cmdline").read_bytes(), f"{pid} still runs"
