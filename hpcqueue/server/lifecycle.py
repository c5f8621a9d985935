"""The server's life, top to bottom: serve -> startup -> main loop -> shutdown.

Startup refuses to start over a live server (its access record or pid file),
makes this start's instance dir (its access record and, for `server start`,
its server.log), restores the journal (if any), binds the port (and the HTTP
API's, if asked), writes the access record and points the server dir's
`current` link at the instance.  The main loop syncs the journal and watches
heartbeats until a signal or `server stop` ends it.  Shutdown tells workers to
stop, closes the journal and removes the access record and the pid file; the
instance dir stays.

Connections are logged at DEBUG (-v): accepted, dropped, a worker's hello and
its end; every message in and out at TRACE (-vv).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import signal
import socket
import time

from hpcqueue import __version__
from hpcqueue.access import (
    SERVER_LOG,
    AccessRecord,
    claim_pid_file,
    connect,
    instance_name,
    new_instance_dir,
    publish,
    read_access,
    remove_access,
    remove_pid_file,
    write_access,
)
from hpcqueue.exceptions import (
    AuthenticationError,
    HpcqueueError,
    JournalError,
    JournalUnavailable,
    NoServerError,
    ProtocolError,
    RequestError,
    ServerAlreadyRunning,
)
from hpcqueue.protocol import new_key, read_message, server_handshake
from hpcqueue.server.config import ServerConfig
from hpcqueue.server.core import Core, Peer
from hpcqueue.server.liveness import Liveness
from hpcqueue.autoalloc import handlers as _alloc_handlers  # noqa: F401 (registers them)
from hpcqueue.autoalloc.service import AutoAlloc
from hpcqueue.server.handlers import HANDLERS
from hpcqueue.server.pushes import stream_events, wait
from hpcqueue.server.watch import watch
from hpcqueue.server.tracing import TRACE, TracedSession, hello_summary
from hpcqueue.server.workers import worker_session
from hpcqueue.state import ServerState

log = logging.getLogger("hpcqueue.server")
#: the cyclic collector's thresholds: each task's bookkeeping allocates containers (a
#: result row, a (job, index) key), and at 700 the young generation was collected every
#: few hundred tasks, its survivors soon making full collections of every connection's
#: objects (a fifth of the server's time with 10,000 workers)
GC_THRESHOLDS = (50_000, 20, 100)
DROP_LOG_INTERVAL = 60.0  # seconds: at most one line per interval for dropped strangers


class RateLimitedLog:
    """WARNING lines of one kind, at most one per interval, with a count of those held back,
    so that a stranger knocking at the port cannot flood the log."""

    def __init__(self, logger: logging.Logger, interval: float):
        self.logger, self.interval = logger, interval
        self.last = -interval
        self.held_back = 0

    def log(self, line: str) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held_back += 1
            return
        more = f" (and {self.held_back} more since the last such line)" if self.held_back else ""
        self.logger.warning("%s%s", line, more)
        self.last, self.held_back = now, 0


def check_no_live_server(config: ServerConfig) -> str | None:
    """Refuse if a server answers in the server dir; else describe a stale record, if any."""
    try:
        record = read_access(config.server_dir)
    except NoServerError:
        return None
    try:
        conn = connect(config.server_dir, timeout=5)
    except (NoServerError, HpcqueueError):
        return record.describe()
    conn.close()
    raise ServerAlreadyRunning(
        f"a server is already running in {config.server_dir} ({record.describe()}, "
        f"port {record.port}): stop it with `hpcqueue server stop`, or give another "
        "--server-dir to run a second one"
    )


class Server:
    def __init__(self, config: ServerConfig, ready=None, open_log=None):
        self.config = config
        #: called with the server once it listens and clients can find it (`--daemon`)
        self.ready = ready
        #: called with the path of the instance's server.log, to log into it too; returns
        #: what closes it again (None: no server.log)
        self.open_log = open_log
        self.key = new_key()
        self.server_id = secrets.token_hex(6)
        self.started = time.time()
        self.instance_dir = None
        self._pid_file = None  # the pid file, once claimed
        self._close_log = None  # closes the instance's server.log
        self.core: Core | None = None
        self.listener: asyncio.AbstractServer | None = None
        self.stopping = asyncio.Event()
        self.port = 0
        self.restored_events = 0
        self.http = None  # the HTTP API (hpcqueue.server.http.HttpApi), when it is on
        self._conn_tasks: set[asyncio.Task] = set()
        self._dropped = RateLimitedLog(log, DROP_LOG_INTERVAL)

    # ------------------------------------------------------------- lifecycle

    async def serve(self) -> None:
        await self.startup()
        try:
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        cfg = self.config
        stale = None
        if cfg.write_access:
            stale = check_no_live_server(cfg)
            if cfg.pid_file is not None:
                claim_pid_file(cfg.pid_file)
                self._pid_file = cfg.pid_file
        try:
            if cfg.write_access:
                self.instance_dir = new_instance_dir(
                    cfg.server_dir, instance_name(self.server_id, self.started))
                if self.open_log is not None:
                    self._close_log = self.open_log(self.instance_dir / SERVER_LOG)
                log.debug("server %s starting (hpcqueue %s, pid %d) in %s", self.server_id,
                          __version__, os.getpid(), self.instance_dir)
                if stale is not None:
                    log.info("replacing a stale access record (%s)", stale)
            await self._start()
        except BaseException:
            # the server.log stays open: the command that started us logs why into it
            if self._pid_file is not None:
                remove_pid_file(self._pid_file)
            raise
        if self.ready is not None:
            self.ready(self)

    async def _start(self) -> None:
        cfg = self.config
        if cfg.http_port is not None:  # its TLS is checked before anything is journaled
            from hpcqueue.server.http import HttpApi

            self.http = HttpApi(cfg)
        state, journal = ServerState(), None
        if cfg.journal is not None:
            state, journal = self._open_journal(cfg)
        self.core = core = Core(state, journal, dispatch_policy=cfg.dispatch)
        core.liveness = Liveness(cfg.heartbeat * cfg.heartbeat_misses + 2)
        core.result_limit = cfg.result_limit
        core.server_dir = str(cfg.server_dir)
        try:
            core.record({"e": "server", "t": time.time(), "v": __version__})
        except HpcqueueError:
            journal.close()
            raise
        try:
            self.listener = await asyncio.start_server(
                self._on_connect, cfg.host, cfg.port, limit=1 << 20, reuse_address=True
            )
        except OSError as e:
            if journal is not None:
                journal.close()
            raise HpcqueueError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror}") from None
        self.port = self.listener.sockets[0].getsockname()[1]
        if self.http is not None:
            try:
                await self.http.start(core)
            except HpcqueueError:
                self.listener.close()
                if journal is not None:
                    journal.close()
                raise
        core.autoalloc = AutoAlloc(core, cfg.server_dir)
        core.autoalloc.start()
        host = cfg.host if cfg.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        log_file = cfg.log_file or (self.instance_dir / SERVER_LOG if self._close_log else None)
        core.info = {
            "server_id": self.server_id, "host": host, "port": self.port, "pid": os.getpid(),
            "started": self.started, "version": __version__,
            "server_dir": str(cfg.server_dir), "restored_events": self.restored_events,
            "instance_dir": str(self.instance_dir) if self.instance_dir else None,
            "log_file": str(log_file) if log_file else None,
            "pid_file": str(cfg.pid_file) if cfg.pid_file else None,
        }
        if cfg.write_access:
            write_access(self.instance_dir, AccessRecord(
                host=host, port=self.port, server_id=self.server_id, key=self.key.hex(),
                pid=os.getpid(), hostname=socket.gethostname(), started=self.started,
                journal=str(cfg.journal) if cfg.journal else None,
                http_url=self.http.url if self.http else None,
                http_token=self.http.token if self.http else None,
            ))
            publish(cfg.server_dir, self.instance_dir)
        log.info("server %s listening on %s:%d (server dir %s)", self.server_id, host,
                 self.port, cfg.server_dir)

    def _open_journal(self, cfg: ServerConfig):
        """(state restored from the journal, its writer), upgrading an old format if asked."""
        from hpcqueue.journal import JournalWriter, restore_file
        from hpcqueue.journal.format import UPGRADE_HINT
        from hpcqueue.journal.tools import journal_version, temp_path, upgrade

        path = cfg.journal
        existed = os.path.exists(path)
        if existed and os.path.getsize(path) > 0 and journal_version(path) == 1:
            if not cfg.journal_upgrade:
                raise JournalError(f"{path} has journal format version 1 (hpcqueue 0.1.0): "
                                   + UPGRADE_HINT.format(path=path))
            backup, events = upgrade(path)
            log.warning("journal %s upgraded to format version 2 (%d events); the original "
                        "is kept as %s", path, events, backup)
        journal = JournalWriter(path, cfg.fsync_interval)  # locks it first
        state, good_end = ServerState(), None
        try:
            try:  # the half-written file of a killed `journal prune` or compaction
                os.unlink(temp_path(path))
                log.info("removed %s, left by an interrupted rewrite of the journal",
                         temp_path(path))
            except FileNotFoundError:
                pass
            if existed and os.path.getsize(path) == 0:
                log.warning("journal %s is empty (0 bytes): starting a new journal in it", path)
            elif existed:
                t0 = time.monotonic()
                state, reader = restore_file(path)
                good_end = reader.good_end
                self.restored_events = reader.count
                log.info("restored %d events from %s in %.2fs", reader.count, path,
                         time.monotonic() - t0)
            journal.prepare(good_end)
        except BaseException:
            journal.close()
            raise
        return state, journal

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                pass

    def _on_signal(self, sig) -> None:
        log.info("got %s: shutting down", signal.Signals(sig).name)
        self.stopping.set()

    async def main_loop(self) -> None:
        core = self.core
        limit = core.liveness.limit
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
            if core.journal is not None:
                self._tend_journal()
            # only the workers whose deadline has come: no scan of every worker
            for wid in core.liveness.expired(time.monotonic()):
                peer = core.live.get(wid)
                if peer is not None:
                    core.worker_gone(wid, f"no heartbeat for {limit:.0f}s", crash=True)
                    peer.writer.close()

    def _tend_journal(self) -> None:
        """Once a second: retry a journal that could not be written, fsync one that can."""
        core = self.core
        if core.journal_down is not None and not core.retry_journal():
            return
        try:
            core.journal.maybe_sync()
            limit = self.config.compact_after
            size = core.journal.end
            if limit is not None and size - core.compacted_size > limit \
                    and size > 2 * core.compacted_size:
                core.compact()
        except JournalUnavailable as e:
            core._journal_failed(e)

    async def shutdown(self) -> None:
        core = self.core
        if core.autoalloc is not None:
            core.autoalloc.stop()
        if self.http is not None:
            await self.http.stop()
        if self.listener is not None:
            self.listener.close()
        for peer in list(core.live.values()):
            try:
                core.send(peer, {"op": "stop", "reason": "the server stopped"})
            except (OSError, RuntimeError):
                pass
        await asyncio.sleep(0.05)
        for task in list(self._conn_tasks):
            task.cancel()
        if core.journal is not None:
            core.journal.close()
        if self.instance_dir is not None:
            remove_access(self.instance_dir, self.server_id)
        if self._pid_file is not None:
            remove_pid_file(self._pid_file)
        log.info("server %s stopped", self.server_id)
        if self._close_log is not None:
            self._close_log()
            self._close_log = None

    # ------------------------------------------------------------- connections

    async def _on_connect(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._conn_tasks.add(task)
        addr = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.debug("accepted a connection from %s", addr)
        try:
            session = await asyncio.wait_for(
                server_handshake(reader, writer, self.key), self.config.handshake_timeout
            )
        except (ProtocolError, AuthenticationError) as e:
            log.debug("dropped the connection from %s: %s", addr, e)
            self._dropped.log(f"dropped a connection from {addr}: {e}")
            await _close(writer)
            self._conn_tasks.discard(task)
            return
        except (asyncio.TimeoutError, OSError):
            log.debug("dropped the connection from %s: no handshake", addr)
            self._dropped.log(f"dropped a connection from {addr}: no handshake")
            await _close(writer)
            self._conn_tasks.discard(task)
            return
        if log.isEnabledFor(TRACE):
            session = TracedSession(session, addr)
        peer = Peer(reader, writer, session, addr)
        kind = "client"
        try:
            first = await read_message(reader, session)
            if isinstance(first, dict) and first.get("op") == "worker_hello":
                kind = "worker"
                log.debug("worker hello from %s: %s", addr, hello_summary(first.get("info")))
                await worker_session(self.core, peer, first, self.config.heartbeat)
                log.debug("worker %s from %s said bye", peer.worker_id, addr)
            else:
                await self._client_session(peer, first)
        except ProtocolError as e:
            if peer.worker_id is not None:
                self.core.worker_gone(peer.worker_id, str(e), crash=True)
                log.debug("dropped worker %s from %s: %s", peer.worker_id, addr, e)
            elif "closed" not in str(e):
                log.warning("dropped client %s: %s", addr, e)
            else:
                log.debug("%s %s closed the connection", kind, addr)
        except JournalUnavailable as e:  # a worker that cannot be registered now
            log.info("turned away a worker from %s: %s", addr, e.cause)
        except asyncio.CancelledError:
            log.debug("closing the connection from %s (the server stops)", addr)
        finally:
            self._conn_tasks.discard(task)
            await _close(writer)

    async def _client_session(self, peer: Peer, msg) -> None:
        core = self.core
        if isinstance(msg, dict):
            log.debug("client %s: first request %r", peer.addr, msg.get("op"))
        while True:
            if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
                core.send(peer, {"ok": False, "error": "a request is a map with an 'op'",
                                 "kind": "RequestError"})
            else:
                op = msg["op"]
                try:
                    if op == "wait":
                        await wait(core, peer, msg)
                    elif op == "stream":
                        await stream_events(core, peer)
                        await peer.writer.drain()
                        return
                    elif op == "watch":
                        await watch(core, peer, msg)
                        return
                    elif op == "journal_compact":
                        before, after = core.compact()
                        core.send(peer, {"ok": True, "journal": core.journal.path,
                                         "before": before, "after": after})
                    elif op == "server_stop":
                        core.send(peer, {"ok": True})
                        self.stopping.set()
                    elif op in HANDLERS:
                        reply = HANDLERS[op](core, msg)
                        if inspect.isawaitable(reply):
                            reply = await reply
                        core.send(peer, {"ok": True, **reply})
                    else:
                        raise RequestError(f"unknown request {op!r}: is the client newer "
                                           "than the server?")
                except HpcqueueError as e:
                    core.send(peer, {"ok": False, "error": str(e), "kind": type(e).__name__})
            await peer.writer.drain()
            msg = await read_message(peer.reader, peer.session)


async def _close(writer) -> None:
    try:
        writer.close()
        await writer.wait_closed()
    except (OSError, RuntimeError):
        pass
    except asyncio.CancelledError:
        pass


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit: the server holds a
    descriptor per connected worker and client, and a soft limit of 1024 (a common default)
    would refuse the 1,000th worker.  Returns (soft before, soft now)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft > hard):
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # e.g. an infinite hard limit the kernel caps lower
        return soft, soft
    return soft, hard


def run_server(config: ServerConfig, ready=None, open_log=None) -> None:
    """Run a server until a signal or `server stop`; `ready(server)` once it listens;
    `open_log(path)` with its instance's server.log (see `Server`)."""
    before, now = raise_fd_limit()
    if now != before:
        log.debug("open files limit raised from %d to %d (the hard limit)", before, now)

    async def main():
        server = Server(config, ready, open_log)
        server.install_signal_handlers()
        await server.serve()

    import gc
    gc.set_threshold(*GC_THRESHOLDS)

    asyncio.run(main())
