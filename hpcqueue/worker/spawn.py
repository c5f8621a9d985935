"""Starting a process with the C library's ``posix_spawn``, from any thread.

``subprocess.Popen`` costs the worker about 0.14 ms of CPU per task in Python code, and
``os.posix_spawn`` cannot set a working directory before Python 3.13 and holds the GIL
while the child execs.  The C library's own ``posix_spawn``, called through ``ctypes``,
does neither: a foreign call releases the GIL (so a spawner thread never stops the event
loop, even while the kernel execs the child), and glibc (2.29+) and musl (1.1.24+) can
change the child's directory (``posix_spawn_file_actions_addchdir_np``).  Each process
gets a session of its own (``POSIX_SPAWN_SETSID``), SIGPIPE, SIGXFSZ and the C library's
own signals back to their defaults (Python ignores SIGPIPE, and an ignored signal stays
ignored across exec), as ``subprocess`` does, an
empty signal mask, and only fds 0, 1 and 2 (``addclosefrom_np`` where the C library has
it; Python opens every other fd close-on-exec anyway).

:func:`spawner` returns a :class:`Spawner`, or None where the C library lacks these
calls: the runner then starts tasks with ``subprocess.Popen``.  Measured against the
alternatives in ``benchmarks/spawn.py``.
"""

from __future__ import annotations

import ctypes
import os
import signal

# glibc's and musl's posix_spawnattr flags (spawn.h): the same values in both
SETSIGDEF = 0x04
SETSIGMASK = 0x08
SETSID = 0x80

# opaque C types, allocated larger than any C library's (glibc's are 80 and 336 bytes)
_ACTIONS_SIZE = 512
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256


class SpawnError(OSError):
    """posix_spawn failed: errno, and whether the working directory was the cause."""


class Spawner:
    """posix_spawn through ctypes.  Thread-safe: each call uses file actions of its own,
    and the shared attributes are only read."""

    def __init__(self, libc) -> None:
        self.libc = libc
        self._spawn = libc.posix_spawn
        self._init = libc.posix_spawn_file_actions_init
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._dup2 = libc.posix_spawn_file_actions_adddup2
        self._chdir = libc.posix_spawn_file_actions_addchdir_np
        self._closefrom = getattr(libc, "posix_spawn_file_actions_addclosefrom_np", None)
        self.attr = ctypes.create_string_buffer(_ATTR_SIZE)
        self._check(libc.posix_spawnattr_init(self.attr))
        defaults = ctypes.create_string_buffer(_SIGSET_SIZE)
        libc.sigemptyset(defaults)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            libc.sigaddset(defaults, int(sig))
        # the C library's own signals (32 and 33 on glibc): its posix_spawn leaves them
        # ignored in the child unless they are listed here, and sigaddset refuses them
        words = (ctypes.c_ulong * (_SIGSET_SIZE // ctypes.sizeof(ctypes.c_ulong)))\
            .from_buffer(defaults)
        bits = 8 * ctypes.sizeof(ctypes.c_ulong)
        for sig in range(32, getattr(signal, "SIGRTMIN", 32)):
            words[(sig - 1) // bits] |= 1 << ((sig - 1) % bits)
        empty = ctypes.create_string_buffer(_SIGSET_SIZE)
        libc.sigemptyset(empty)
        self._check(libc.posix_spawnattr_setsigdefault(self.attr, defaults))
        self._check(libc.posix_spawnattr_setsigmask(self.attr, empty))
        self._check(libc.posix_spawnattr_setflags(
            self.attr, ctypes.c_short(SETSID | SETSIGDEF | SETSIGMASK)))

    @staticmethod
    def _check(err: int) -> None:
        if err:
            raise OSError(err, os.strerror(err))

    def spawn(self, path: bytes, argv: list[bytes], env: list[bytes], cwd: bytes,
              fds: tuple[int | None, int | None, int | None]) -> int:
        """Start PATH (a full path: no search) with ARGV and ENV (``b"NAME=value"``) in
        CWD, in a session of its own; FDS become its stdin, stdout and stderr (None: the
        worker's own).  Returns its pid; SpawnError if it could not start."""
        argv_c = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        env_c = (ctypes.c_char_p * (len(env) + 1))(*env, None)
        actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
        self._check(self._init(actions))
        try:
            for target, fd in enumerate(fds):
                if fd is not None:
                    self._check(self._dup2(actions, fd, target))
            self._check(self._chdir(actions, cwd))
            if self._closefrom is not None:
                self._check(self._closefrom(actions, 3))
            pid = ctypes.c_int()
            err = self._spawn(ctypes.byref(pid), path, actions, self.attr, argv_c, env_c)
        finally:
            self._destroy(actions)
        if err:
            raise SpawnError(err, os.strerror(err))
        return pid.value


def spawner() -> Spawner | None:
    """A Spawner, or None where the C library lacks posix_spawn's chdir or setsid."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.posix_spawn_file_actions_addchdir_np  # noqa: B018 (glibc 2.29, musl 1.1.24)
        return Spawner(libc)
    except (OSError, AttributeError):
        return None
