"""The reach probe: a short job whose nodes connect back to the server, run at `alloc add`.

A worker on a compute node finds the server through the access record (its ``host``, or the
queue's ``server-address``).  A server that listens on an address the nodes cannot reach
(127.0.0.1, an interface they have no route to) would make allocations whose workers never
connect.  So `alloc add` submits the queue's own script once more, with the worker command
replaced by ``python -m hpcqueue.autoalloc.probe TOKEN``: on each node (through ``srun`` when
``--workers-per-alloc`` is more than one) that connects to the server as a worker would, says
``alloc_probe`` with TOKEN and its hostname, and exits.  The server waits for one connection
per node, or for the job to end without them, and cancels the job if it has not ended.

The job side (``main``) imports only what a worker's connection needs.
"""

from __future__ import annotations

import shlex
import socket
import sys

#: how long one connection attempt from a node may take
CONNECT_TIMEOUT = 10.0
#: how long the probe job may wait in the scheduler's queue before `alloc add` stops waiting
#: for it (the queue is added; the address is then not checked)
START_WAIT = 60.0
#: how long it may run in all (well under the 180 s `alloc add` request timeout)
RUN_WAIT = 90.0
POLL = 0.5
STATUS_EVERY = 1.0
#: after the job ended, how long late connections may still come in
GRACE = 1.0


def probe_command(token: str, server_host: str | None) -> str:
    """The command each node of the probe job runs, in place of the worker command."""
    argv = [sys.executable, "-m", "hpcqueue.autoalloc.probe", token]
    if server_host:
        argv += ["--server-host", server_host]
    return shlex.join(argv)


def main(argv: list[str]) -> int:
    """On a node: connect to the server as a worker would and report; 0 when it answered."""
    from hpcqueue.access import candidate_hosts, read_access, server_dir
    from hpcqueue.exceptions import HpcqueueError
    from hpcqueue.protocol import BlockingConnection

    token, server_host = argv[0], None
    if argv[1:2] == ["--server-host"] and len(argv) > 2:
        server_host = argv[2]
    here = socket.gethostname()
    try:
        record = read_access(server_dir(None))
    except HpcqueueError as e:
        print(f"hpcqueue probe on {here}: {e}", file=sys.stderr)
        return 1
    hosts = ([server_host] if server_host else []) + candidate_hosts(record)
    errors = []
    for host in dict.fromkeys(hosts):
        try:
            conn = BlockingConnection(host, record.port, record.key_bytes,
                                      timeout=CONNECT_TIMEOUT)
        except (OSError, HpcqueueError) as e:
            errors.append(f"{host}:{record.port}: {getattr(e, 'strerror', None) or e}")
            continue
        try:
            conn.send({"op": "alloc_probe", "token": token, "hostname": here})
            conn.recv()
        except (OSError, HpcqueueError) as e:
            errors.append(f"{host}:{record.port}: {e}")
            continue
        finally:
            conn.close()
        print(f"hpcqueue probe on {here}: reached the server at {host}:{record.port}")
        return 0
    print(f"hpcqueue probe on {here}: cannot reach the server at {'; '.join(errors)}",
          file=sys.stderr)
    return 1


async def run_probe(params, sched, transport, probe_dir, server_dir, address: str,
                    token: str, arrivals: list) -> str:
    """Submit the probe job for a queue and wait for its nodes; a one-line note when it
    passed or could not tell, a UsageError naming ADDRESS (the server's host:port as the
    nodes try it) when the nodes did not reach it.  ARRIVALS fills with the hostnames that
    connected, which the server's `alloc_probe` handler adds for TOKEN.  The job never
    outlives this call."""
    import asyncio
    import dataclasses
    import time

    from hpcqueue.autoalloc.model import AllocState
    from hpcqueue.autoalloc.service import write_script
    from hpcqueue.exceptions import HpcqueueError, UsageError

    expected = params.workers_per_alloc
    short = dataclasses.replace(params, time_limit=60.0)
    script = write_script(short, 0, "probe", probe_dir, server_dir,
                          worker_cmd=probe_command(token, params.server_host))
    job_id = await transport.submit(sched, script, probe_dir)
    if hasattr(transport, "remember"):
        transport.remember(job_id, probe_dir)
    state, ended_at, last_status = AllocState.QUEUED, None, 0.0
    start = time.monotonic()
    try:
        while len(arrivals) < expected:
            now = time.monotonic()
            if ended_at is not None and now - ended_at >= GRACE:
                break
            if state is AllocState.QUEUED and now - start >= START_WAIT:
                return (f"the probe job {job_id} did not start within {START_WAIT:g}s: "
                        f"whether the nodes reach the server at {address} was not checked")
            if now - start >= START_WAIT + RUN_WAIT:
                break
            if ended_at is None and now - last_status >= STATUS_EVERY:
                last_status = now
                try:
                    raw = (await transport.status(sched, [job_id])).get(job_id)
                except HpcqueueError:
                    raw = "unread"
                if raw != "unread":
                    state, _ = sched.classify(raw, bool(arrivals))
                    if state not in (AllocState.QUEUED, AllocState.RUNNING):
                        ended_at = now
            await asyncio.sleep(POLL)
    finally:
        if ended_at is None:
            try:
                await transport.cancel(sched, [job_id])
            except HpcqueueError:
                pass
    if len(arrivals) >= expected:
        return (f"{len(arrivals)} node(s) of probe job {job_id} reached the server at "
                f"{address}: {', '.join(sorted(arrivals))}")
    said = _said(probe_dir / "stderr")
    raise UsageError(
        f"the nodes of this queue cannot reach the server at {address}: "
        f"{len(arrivals)} of {expected} node(s) of probe job {job_id} connected back"
        f"{' (' + said + ')' if said else ''}; start the server on an address they reach "
        "with `hpcqueue server start --host ADDRESS` (or set server-address)")


def _said(path) -> str:
    """The probe's own words from the job's stderr, on one line."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    said = [line.strip() for line in lines if "hpcqueue probe on" in line]
    if not said:
        return ""
    more = f"; {len(said) - 1} more node(s) alike" if len(said) > 1 else ""
    return said[0][:300] + more


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
