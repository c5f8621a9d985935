"""The worker's life: connect, register, run what it is given, heartbeat, leave.

A worker leaves when the server tells it to (`worker stop`, `server stop`),
when it has been idle for ``--idle-timeout``, or when its time is up
(``--time-limit`` or the end of the batch job it runs in).  When the server
is lost it stops, or with ``--on-server-lost reconnect`` it kills its tasks
(the server runs them again) and reconnects to whatever server the server
dir then names, until its time is up.  It reads the access record again at
every attempt, so a key that no longer matches (the server was restarted and
wrote a new one) is one more reason to retry, not to give up.  With ``--tunnel``
it connects through an SSH host (hpcqueue/worker/tunnel.py), and each attempt
opens the SSH connection again if it has dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcqueue import __version__
from hpcqueue.access import candidate_hosts, read_access
from hpcqueue.exceptions import (
    AuthenticationError,
    ConnectionLost,
    HpcqueueError,
    NoServerError,
    ProtocolError,
)
from hpcqueue.protocol import client_handshake, read_message
from hpcqueue.worker.runner import Runner

log = logging.getLogger("hpcqueue.worker")
END_MARGIN = 5.0  # seconds before the batch job's end at which a worker leaves
RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)
RESULT_DELAY = 0.002  # seconds results wait to travel together
RESULT_BATCH = 512  # ... or until this many are waiting
SIGNAL_GRACE = 1.0  # seconds a task killed by a signal waits before it is reported
_SIGNAL_CODES = frozenset({-signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT, -signal.SIGHUP})


@dataclass
class WorkerConfig:
    server_dir: Path
    cpus: int = 1
    res: dict = field(default_factory=dict)
    #: the indexed resources among `res`: name -> indices (gpus=[0,1]), and whose variables
    #: tell a task its GPUs (hpcqueue.worker.resources)
    indices: dict = field(default_factory=dict)
    gpu_vendor: str = "nvidia"
    idle_timeout: float | None = None
    time_limit: float | None = None
    on_server_lost: str = "stop"
    executor: str = "process"
    manager: str | None = None
    batch_job: str | None = None
    end_time: float | None = None  # epoch seconds, from the batch job
    handle_signals: bool = False  # SIGTERM/SIGINT leave cleanly (a standalone worker)
    server_host: str | None = None  # reach the server here, not at the access record's host
    tunnel: str | None = None  # [USER@]HOST[:PORT]: reach the server through SSH via HOST


class ServerLost(Exception):
    pass


class Leave(Exception):
    """The worker decided to end: carries the reason."""


class Worker:
    def __init__(self, cfg: WorkerConfig):
        self.cfg = cfg
        self.started = time.time()
        ends = [t for t in (
            self.started + cfg.time_limit if cfg.time_limit else None,
            cfg.end_time - END_MARGIN if cfg.end_time else None,
        ) if t is not None]
        self.end = min(ends) if ends else None
        self.id: int | None = None
        self.runner: Runner | None = None
        self._writer = None
        self._crypto = None
        self._pending: list = []
        self._flush_scheduled = False
        self.signalled: str | None = None
        self._signal_event: asyncio.Event | None = None
        self.tunnel = None
        if cfg.tunnel:
            from hpcqueue.worker.tunnel import Tunnel, parse_tunnel

            self.tunnel = Tunnel(parse_tunnel(cfg.tunnel))

    def _on_signal(self, sig) -> None:
        # scancel/qdel send SIGTERM: leave with a bye, so tasks go back without a crash
        self.signalled = signal.Signals(sig).name
        self._signal_event.set()

    # ------------------------------------------------------------- main

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        self.runner = Runner(loop, cfg.cpus, cfg.res, self._report, cfg.executor,
                             indices=cfg.indices, gpu_vendor=cfg.gpu_vendor)
        self.runner.server_dir = str(cfg.server_dir)
        self.runner.deadline = self.end
        self.runner.on_back = self._hand_back
        self._signal_event = asyncio.Event()
        if cfg.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.add_signal_handler(sig, self._on_signal, sig)
        attempt = 0
        last_failure = None
        try:
            while True:
                try:
                    reader, writer = await self._connect()
                except (NoServerError, OSError, ProtocolError, AuthenticationError) as e:
                    if cfg.on_server_lost != "reconnect":
                        raise HpcqueueError(str(e)) from None
                    delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                    attempt += 1
                    # a line for the first failure, for a new kind of failure, and for every
                    # tenth attempt: not one per attempt
                    if attempt == 1 or attempt % 10 == 0 or type(e) is not last_failure:
                        log.warning("cannot reach the server (%s); retrying", e)
                    last_failure = type(e)
                    if self.end is not None and time.time() + delay >= self.end:
                        log.info("worker time is up while waiting for the server")
                        return 0
                    try:
                        await asyncio.wait_for(self._signal_event.wait(), delay)
                    except asyncio.TimeoutError:
                        continue
                    log.info("got %s while waiting for the server: stopping", self.signalled)
                    return 0
                attempt = 0
                last_failure = None
                try:
                    reason = await self._session(reader, writer)
                    log.info("worker %s stopping: %s", self.id, reason)
                    return 0
                except ServerLost as e:
                    self.runner.kill_all()
                    self._pending.clear()
                    if cfg.on_server_lost != "reconnect":
                        log.error("lost the server (%s): stopping", e)
                        return 1
                    log.warning("lost the server (%s): reconnecting", e)
                finally:
                    writer.close()
        finally:
            self.runner.shutdown()
            if self.tunnel is not None:
                self.tunnel.close()

    async def _connect(self):
        record = read_access(self.cfg.server_dir)
        log.debug("access record in %s: server %s at %s:%d (%s)", self.cfg.server_dir,
                  record.server_id, record.host, record.port, record.describe())
        last = None
        hosts = candidate_hosts(record)
        if self.cfg.server_host:
            hosts = [self.cfg.server_host] + hosts
        if self.tunnel is not None:
            # the address at which the SSH host reaches the server
            hosts = [self.cfg.server_host or record.host]
        for host in hosts:
            try:
                if self.tunnel is not None:  # its SSH steps have timeouts of their own
                    reader, writer = await self.tunnel.open_connection(host, record.port,
                                                                       limit=1 << 20)
                    break
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, record.port, limit=1 << 20), 30)
                log.debug("connected to %s:%d", host, record.port)
                break
            except (OSError, asyncio.TimeoutError) as e:
                log.debug("cannot connect to %s:%d: %s", host, record.port, e)
                last = e
        else:
            where = hosts[0] if self.tunnel is not None else record.host
            raise NoServerError(
                f"the server in {self.cfg.server_dir} is not reachable at "
                f"{where}:{record.port} ({last}): start one with `hpcqueue server start`")
        if self.tunnel is None:  # through a tunnel, it is a socket pair
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            session = await asyncio.wait_for(
                client_handshake(reader, writer, record.key_bytes), 30)
        except asyncio.TimeoutError:
            writer.close()
            raise ProtocolError("the server did not complete the handshake") from None
        except HpcqueueError:
            writer.close()
            raise
        self._crypto = session
        return reader, writer

    def _info(self) -> dict:
        cfg = self.cfg
        info = {"hostname": socket.gethostname(), "pid": os.getpid(), "cpus": cfg.cpus,
                "res": cfg.res, "version": __version__}
        if cfg.indices:
            info["res_idx"] = cfg.indices
        if self.end is not None:
            info["remaining"] = max(0.0, self.end - time.time())
        for key in ("batch_job", "manager", "idle_timeout", "time_limit"):
            if getattr(cfg, key) is not None:
                info[key] = getattr(cfg, key)
        if os.environ.get("HPCQUEUE_ALLOC_ID"):
            info["alloc"] = os.environ["HPCQUEUE_ALLOC_ID"]
        return info

    async def _session(self, reader, writer) -> str:
        self._writer = writer
        self._send({"op": "worker_hello", "info": self._info()})
        try:
            welcome = await read_message(reader, self._crypto)
        except ConnectionLost as e:
            raise ServerLost(str(e)) from None
        self.id = welcome.get("id")
        self.runner.worker_id = self.id  # each task sees it as $HPCQUEUE_WORKER_ID
        limit = welcome.get("result_limit")
        if type(limit) is int and limit >= 0:  # (a server before Python calls says none)
            self.runner.result_limit = limit
        heartbeat = float(welcome.get("heartbeat") or 8.0)
        log.info("worker %s connected to server %s", self.id, welcome.get("server_id"))
        watch = asyncio.ensure_future(self._watch(heartbeat))
        read = asyncio.ensure_future(self._read(reader))
        try:
            done, _ = await asyncio.wait({watch, read}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, Leave):
                    reason = str(exc)
                    self.runner.kill_all()
                    self._flush()
                    self._send({"op": "bye", "reason": reason})
                    try:
                        await writer.drain()
                    except (OSError, ConnectionError):
                        pass
                    return reason
                if isinstance(exc, (ProtocolError, OSError, ConnectionError)):
                    raise ServerLost(str(exc))
                if exc is not None:
                    raise exc
            raise ServerLost("connection ended")
        finally:
            watch.cancel()
            read.cancel()
            self._writer = None

    async def _read(self, reader) -> None:
        runner = self.runner
        while True:
            msg = await read_message(reader, self._crypto)
            op = msg.get("op")
            if op == "tasks":
                runner.add(msg.get("jobs") or {}, msg["tasks"])
            elif op == "kill":
                runner.kill(msg["tasks"])
            elif op == "stop":
                raise Leave(msg.get("reason") or "stopped by the server")

    async def _watch(self, heartbeat: float) -> None:
        idle = self.cfg.idle_timeout
        last_hb = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if self.signalled:
                raise Leave(f"terminated by {self.signalled}")
            if self.end is not None and time.time() >= self.end:
                raise Leave("time limit reached")
            if idle and not self.runner.busy and now - self.runner.idle_since >= idle:
                raise Leave(f"idle for {idle:g}s")
            if now - last_hb >= heartbeat:
                self._send({"op": "hb"})
                last_hb = now

    # ------------------------------------------------------------- sending

    def _send(self, message) -> None:
        if self._writer is not None:
            self._writer.write(self._crypto.seal(message))

    def _report(self, row) -> None:
        code, msg = row[3], row[6] or ""
        if code in _SIGNAL_CODES and "time limit" not in msg:
            # scancel/qdel signal the tasks and the worker together: wait a moment, so that
            # a task killed along with its worker goes back to the queue, not to `failed`
            asyncio.get_running_loop().call_later(SIGNAL_GRACE, self._report_late, row)
            return
        self._report_now(row)

    def _report_late(self, row) -> None:
        if not self.signalled:
            self._report_now(row)

    def _report_now(self, row) -> None:
        self._pending.append(row)
        if len(self._pending) >= RESULT_BATCH:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            # gather the results of a moment into one frame: the next tasks are already
            # here (prefetched), so this delays only the bookkeeping, not the work
            asyncio.get_running_loop().call_later(RESULT_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending and self._writer is not None:
            rows, self._pending = self._pending, []
            message = {"op": "done", "r": rows}
            # the results of Python calls travel beside the rows: [job, index, instance, result]
            out = [[r[0], r[1], r[2], r.pop()] for r in rows if len(r) > 7]
            if out:
                message["o"] = out
            self._send(message)

    def _hand_back(self, tasks) -> None:
        by_job: dict[int, list] = {}
        for t in tasks:
            by_job.setdefault(t[0], []).append(t[1])
        flat: list = []
        for job_id, idxs in by_job.items():
            flat += (job_id, idxs)
        self._send({"op": "back", "tasks": flat})
