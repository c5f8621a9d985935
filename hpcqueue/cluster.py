"""A local cluster: a server and workers in this process, for a script, a test or
`hpcqueue run`.

The server listens on loopback with a fresh key in a private temporary server dir, and the
workers connect to it as they would from a batch job; all of them run in one event loop on
a thread of their own, so the caller (any thread) uses them through a :class:`Client`.
Everything is stopped, and the server dir removed, when the cluster closes::

    with hpcqueue.LocalCluster(workers=2, cpus=4) as cluster:
        job = cluster.client().submit("echo $HPCQUEUE_TASK_ID", array="1-100")
        job.wait()
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hpcqueue.exceptions import HpcqueueError, UsageError

START_TIMEOUT = 60.0  # seconds the server may take to start
STOP_TIMEOUT = 30.0  # seconds the server and workers may take to stop
WORKER_STOP_TIMEOUT = 5.0  # seconds workers are given to leave once the server stopped


def default_cpus() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class LocalCluster:
    """A server and WORKERS local workers of CPUS cpus each (default: the CPUs this process
    may use, split between them).  EXECUTOR 'noop' runs no process for a task (it finishes
    at once): for measuring the queue itself."""

    def __init__(self, workers: int = 1, cpus: int | None = None, *,
                 executor: str = "process"):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise UsageError(f"workers must be a whole number of 1 or more, not {workers!r}")
        if cpus is not None and (not isinstance(cpus, int) or isinstance(cpus, bool)
                                 or cpus < 1):
            raise UsageError(f"cpus must be a whole number of 1 or more, not {cpus!r}")
        if executor not in ("process", "noop"):
            raise UsageError(f"executor must be 'process' or 'noop', not {executor!r}")
        self.workers = workers
        self.cpus = cpus if cpus is not None else max(1, default_cpus() // workers)
        self.executor = executor
        #: why the cluster stopped by itself (its workers all ended), or None
        self.failure: HpcqueueError | None = None
        self._dir: Path | None = None
        self._thread: threading.Thread | None = None
        self._loop = None
        self._server = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._clients: list = []

    def __repr__(self) -> str:
        return f"LocalCluster(workers={self.workers}, cpus={self.cpus})"

    @property
    def server_dir(self) -> Path:
        """The server dir of the running cluster (for a Client, or `--server-dir`)."""
        if self._dir is None:
            raise HpcqueueError("the local cluster is not running: use it as `with "
                                "LocalCluster() as cluster:` or call start() first")
        return self._dir

    def client(self, timeout: float | None = 60.0):
        """A :class:`~hpcqueue.client.Client` of the cluster's server (closed with it)."""
        from hpcqueue.client import Client

        c = Client(self.server_dir, timeout=timeout)
        self._clients.append(c)
        return c

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> LocalCluster:
        """Start the server and the workers; returns once clients can connect."""
        import tempfile

        if self._thread is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="hpcqueue-run-"))
        self._thread = threading.Thread(target=self._run, name="hpcqueue-local-cluster",
                                        daemon=True)
        self._thread.start()
        try:
            ready = self._ready.wait(START_TIMEOUT)
        except BaseException:  # interrupted (Ctrl-C): leave nothing behind
            self.close()
            raise
        if not ready or self._error is not None:
            error = self._error
            self.close()
            if isinstance(error, HpcqueueError):
                raise error
            raise HpcqueueError(f"the local server did not start: {error or 'timed out'}")
        return self

    def close(self) -> None:
        """Stop the workers (killing the tasks they run) and the server; remove the server
        dir.  Safe to call twice."""
        import shutil

        for c in self._clients:
            c.close()
        self._clients.clear()
        thread, self._thread = self._thread, None
        if thread is not None:
            loop, server = self._loop, self._server
            if loop is not None and server is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(server.stopping.set)
                except RuntimeError:  # the loop closed meanwhile
                    pass
            thread.join(STOP_TIMEOUT)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._main())
        except BaseException as e:  # handed to the thread that waits
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        import asyncio

        from hpcqueue.server.config import ServerConfig
        from hpcqueue.server.lifecycle import Server
        from hpcqueue.worker.agent import Worker, WorkerConfig

        self._loop = asyncio.get_running_loop()
        server = Server(ServerConfig(server_dir=self._dir, host="127.0.0.1", port=0))
        await server.startup()
        self._server = server
        main = asyncio.ensure_future(server.main_loop())
        workers = [asyncio.ensure_future(Worker(WorkerConfig(
            server_dir=self._dir, cpus=self.cpus, executor=self.executor)).run())
            for _ in range(self.workers)]
        self._ready.set()
        try:
            stopping = asyncio.ensure_future(server.stopping.wait())
            pending = set(workers)
            while pending and not stopping.done():
                _, pending = await asyncio.wait(pending | {stopping},
                                                return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stopping)
            if not stopping.done():  # every worker ended by itself: nothing would run
                errors = [w.exception() for w in workers if w.exception() is not None]
                self.failure = HpcqueueError(
                    "the local workers ended before the job: "
                    + (str(errors[0]) if errors else "no error given"))
                server.stopping.set()
            await main
        finally:
            await server.shutdown()
            await asyncio.wait(workers, timeout=WORKER_STOP_TIMEOUT)
