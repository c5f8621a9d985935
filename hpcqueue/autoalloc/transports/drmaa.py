"""The DRMAA transport: submit, status and cancel through any DRMAA 1.0 library.

It uses the `drmaa` package (extra ``hpcqueue[drmaa]``) and the library named
by ``DRMAA_LIBRARY_PATH``.  The script is submitted as a script, not a binary
(``-b n`` for Grid Engine), so its ``#$`` directives apply as with qsub.
DRMAA job states map onto our phases; a job aborted by a cancel is
"cancelled", not the queue's fault.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from hpcqueue.autoalloc.schedulers.base import RawStatus
from hpcqueue.exceptions import SchedulerError, UsageError

def _import_drmaa():
    try:
        import drmaa
    except ImportError:
        raise UsageError("the drmaa transport needs the drmaa package: "
                         "pip install 'hpcqueue[drmaa]'") from None
    except RuntimeError as e:  # raised at import when the library cannot be loaded
        hint = "" if os.environ.get("DRMAA_LIBRARY_PATH") else \
            " (set DRMAA_LIBRARY_PATH to the DRM's libdrmaa.so)"
        raise SchedulerError(f"cannot load the DRMAA library{hint}: {e}") from None
    return drmaa


#: DRMAA allows one session per process: every transport shares it
_SESSION = None
_LOCK = threading.Lock()
#: jobs this process reaped (DRMAA forgets them): job id -> how they ended
_ENDED: dict[str, RawStatus] = {}


class DrmaaTransport:
    name = "drmaa"

    def __init__(self):
        self._drmaa = None
        self._lock = _LOCK
        self._ended = _ENDED

    def _open(self):
        global _SESSION
        self._drmaa = _import_drmaa()
        if _SESSION is None:
            session = self._drmaa.Session()
            try:
                session.initialize()
            except self._drmaa.errors.DrmaaException as e:
                raise SchedulerError(f"cannot open a DRMAA session: {e}") from None
            _SESSION = session
        return _SESSION

    async def _call(self, what: str, fn):
        def locked():
            with self._lock:
                return fn(self._open())

        try:
            return await asyncio.to_thread(locked)
        except (SchedulerError, UsageError):
            raise
        except Exception as e:  # drmaa.errors.*: the DRM's own message
            raise SchedulerError(f"DRMAA {what} failed: {type(e).__name__}: {e}") from None

    async def submit(self, scheduler, script: Path, cwd: Path, hold: bool = False) -> str:
        def run(session):
            drmaa = self._drmaa
            jt = session.createJobTemplate()
            try:
                jt.remoteCommand = str(script)
                jt.workingDirectory = str(cwd)
                jt.nativeSpecification = scheduler.drmaa_native_spec
                if hold:
                    jt.jobSubmissionState = drmaa.JobSubmissionState.HOLD_STATE
                return session.runJob(jt)
            finally:
                session.deleteJobTemplate(jt)

        return str(await self._call("submit", run))

    async def status(self, scheduler, job_ids: list[str]) -> dict:
        def run(session):
            drmaa = self._drmaa
            ps = drmaa.JobState
            queued = {ps.QUEUED_ACTIVE, ps.SYSTEM_ON_HOLD, ps.USER_ON_HOLD,
                      ps.USER_SYSTEM_ON_HOLD}
            running = {ps.RUNNING, ps.SYSTEM_SUSPENDED, ps.USER_SUSPENDED,
                       ps.USER_SYSTEM_SUSPENDED}
            out = {}
            for job_id in job_ids:
                if job_id in self._ended:
                    out[job_id] = self._ended[job_id]
                    continue
                try:
                    state = session.jobStatus(job_id)
                except drmaa.errors.InvalidJobException:
                    continue  # unknown to this session (e.g. after a restart): gone
                if state in queued:
                    out[job_id] = RawStatus(str(state), phase="queued")
                elif state in running:
                    out[job_id] = RawStatus(str(state), phase="running")
                elif state in (ps.DONE, ps.FAILED):
                    out[job_id] = self._reap(session, job_id, str(state))
            return out

        return await self._call("status", run)

    def _reap(self, session, job_id: str, word: str) -> RawStatus:
        drmaa = self._drmaa
        raw = RawStatus(word, phase="ended")
        try:
            info = session.wait(job_id, drmaa.Session.TIMEOUT_NO_WAIT)
            raw.aborted = bool(info.wasAborted)
            if info.hasExited:
                raw.exit_code = int(info.exitStatus)
            elif info.hasSignal:
                raw.exit_code = 128
                raw.reason = f"killed by {info.terminatedSignal}"
        except drmaa.errors.DrmaaException:
            pass
        self._ended[job_id] = raw
        return raw

    async def cancel(self, scheduler, job_ids: list[str]) -> None:
        def run(session):
            drmaa = self._drmaa
            for job_id in job_ids:
                try:
                    session.control(job_id, drmaa.JobControlAction.TERMINATE)
                except drmaa.errors.InvalidJobException:
                    pass

        await self._call("cancel", run)
