"""Typed errors.

Everything a user can get wrong raises a subclass of :class:`HpcqueueError`.
The command line prints its message as one line and exits non-zero; a
traceback is reserved for our own bugs.
"""

from __future__ import annotations


class HpcqueueError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""

    exit_code = 1


class UsageError(HpcqueueError):
    """Bad command-line arguments or values (an array spec, a duration, ...)."""

    exit_code = 2


class ServerUnreachable(HpcqueueError):
    """No server answers for the server dir: none was started, it stopped, or the
    connection to it was lost."""


class NoServerError(ServerUnreachable):
    """There is no server, or only a stale access record, in the server dir."""


class ServerAlreadyRunning(HpcqueueError):
    """`server start` found a live server in the same server dir."""


class AuthenticationError(HpcqueueError):
    """A peer did not prove that it knows the server's key."""


class ProtocolError(HpcqueueError):
    """A malformed or unexpected network frame."""


class ConnectionLost(ProtocolError):
    """The peer closed the connection."""


class RequestError(HpcqueueError):
    """The server refused a request; the message is the server's reason."""


class Refused(RequestError):
    """A request the server refused (rebuilt by the client from the server's reply)."""


class OutputUnreadable(HpcqueueError):
    """Part of what a task wrote could not be read (a task file it cannot open, a damaged
    part of a stream log); ``data`` holds what could be read."""

    def __init__(self, message: str, data: bytes = b""):
        super().__init__(message)
        self.data = data


class JournalError(HpcqueueError):
    """A journal file that is not ours, of an unknown version, or damaged."""


class JournalDamaged(JournalError):
    """Damage in the middle of a journal: intact records follow bytes that fail their check."""

    def __init__(self, path, start: int, end: int):
        super().__init__(
            f"journal {path} is damaged at byte {start} (bytes {start}-{end - 1} fail their "
            f"checksum, and intact records follow from byte {end}): the server does not start "
            f"on it, so that nothing is lost or changed silently; `hpcqueue journal check "
            f"{path}` shows what is intact, and `hpcqueue journal repair {path}` writes a "
            "journal of every intact record, keeping the original")
        self.path, self.start, self.end = path, start, end


class JournalUnavailable(JournalError):
    """The journal cannot be written now (disk full, I/O error, read-only file system)."""

    def __init__(self, path, error: OSError | str):
        cause = error if isinstance(error, str) else (error.strerror or str(error))
        super().__init__(
            f"the journal {path} cannot be written ({cause}): this request was not accepted, "
            "and nothing accepted before it was lost; the server keeps running, retries, and "
            "accepts requests again by itself once it can write")
        self.path, self.cause = path, cause


class NotFound(Refused):
    """A job, task or worker id that the server does not know."""


class Unavailable(Refused):
    """The server cannot take requests now (its journal cannot be written): try again
    later; it accepts them again by itself once it can write."""


class TemplateError(HpcqueueError):
    """A job-script template that does not parse or render."""


class SchedulerError(HpcqueueError):
    """A scheduler command failed; the message carries the scheduler's own words."""

    def __init__(self, message: str, command=None, returncode=None, stdout="", stderr=""):
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class RemoteError(HpcqueueError):
    """A Python call run as a task raised (or its value could not come back): the remote
    exception's type name, message and formatted traceback, as text.  When the exception
    itself unpickles, it is raised instead, with this error as its cause."""

    def __init__(self, type_name: str, message: str, traceback: str = "",
                 task: int | None = None, job: int | None = None):
        where = f" (job {job} task {task})" if job is not None and task is not None else ""
        text = f"{type_name}: {message}" if message else type_name
        if traceback:
            text += f"{where}\n\nremote traceback:\n{traceback.rstrip()}"
        elif where:
            text += where
        super().__init__(text)
        self.type_name, self.message, self.traceback = type_name, message, traceback
        self.job, self.task = job, task


#: the `kind` of an error reply (the server's exception class name) -> the exception the
#: client raises; any other kind, or none (an older server), is :class:`Refused`
REPLY_KINDS: dict[str, type[HpcqueueError]] = {
    "NotFound": NotFound,
    "JournalUnavailable": Unavailable,
    "SchedulerError": SchedulerError,
    "TemplateError": TemplateError,
}


def from_reply(reply) -> HpcqueueError:
    """The typed error an ``{"ok": false, "error": ..., "kind": ...}`` reply stands for."""
    if not isinstance(reply, dict):
        return ProtocolError("the server sent a reply that is not a map")
    kind = REPLY_KINDS.get(str(reply.get("kind")), Refused)
    return kind(reply.get("error") or "the server refused the request")
