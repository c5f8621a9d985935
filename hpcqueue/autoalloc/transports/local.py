"""The local transport: run the allocation script as a detached process group.

The job id is the process id.  The wrapper writes the script's exit code into
the allocation dir, so the status of an allocation can be read even by a
server that was restarted and is no longer its parent.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

from hpcqueue.autoalloc.schedulers.base import RawStatus
from hpcqueue.exceptions import SchedulerError


class LocalTransport:
    name = "local"

    def __init__(self):
        self.children: dict[str, subprocess.Popen] = {}
        self.dirs: dict[str, Path] = {}

    async def submit(self, scheduler, script: Path, cwd: Path, hold: bool = False) -> str:
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SchedulerError(f"the local allocation script does not parse: "
                                 f"{' '.join(check.stderr.split())}", command=["bash", "-n"])
        if hold:
            return "dry-run"
        q = shlex.quote
        wrapper = (f"bash {q(str(script))} >{q(str(cwd / 'stdout'))} "
                   f"2>{q(str(cwd / 'stderr'))}; echo $? >{q(str(cwd / 'exit'))}")
        proc = subprocess.Popen(["bash", "-c", wrapper], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        job_id = str(proc.pid)
        self.children[job_id] = proc
        self.dirs[job_id] = cwd
        return job_id

    def remember(self, job_id: str, alloc_dir: Path) -> None:
        self.dirs[job_id] = alloc_dir

    async def status(self, scheduler, job_ids: list[str]) -> dict:
        out = {}
        for job_id in job_ids:
            child = self.children.get(job_id)
            if child is not None:
                child.poll()  # reap it
            exit_file = self.dirs.get(job_id, Path("/nonexistent")) / "exit"
            if exit_file.exists():
                try:
                    code = int(exit_file.read_text().strip() or 0)
                except ValueError:
                    code = None
                out[job_id] = RawStatus("exited", exit_code=code)
            elif _alive(int(job_id)):
                out[job_id] = RawStatus("running")
        return out

    async def cancel(self, scheduler, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                os.killpg(int(job_id), signal.SIGTERM)
            except (ProcessLookupError, PermissionError, ValueError):
                pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
