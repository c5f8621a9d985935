"""Liveness: silent workers found by their deadlines, not by a scan of every worker; a real
server that drops a silent worker and keeps one that beats; its open files limit."""

import asyncio

from hpcqueue.protocol import client_handshake, read_message
from hpcqueue.server.config import ServerConfig
from hpcqueue.server.lifecycle import Server
from hpcqueue.server.liveness import Liveness


class CountingHeap(list):
    """A heap that counts the entries looked at (the heapq functions index it)."""

    looked = 0

    def __getitem__(self, k):
        CountingHeap.looked += 1
        return super().__getitem__(k)


def test_a_silent_worker_expires_and_one_seen_does_not():
    live = Liveness(10.0)
    live.add(1, 0.0)
    live.add(2, 0.0)
    live.seen(2, 8.0)
    assert live.expired(10.0) == []  # not past the deadline yet (silent for exactly 10 s)
    assert live.expired(10.5) == [1]
    assert len(live) == 1 and 1 not in live.last
    assert live.expired(18.0) == []
    assert live.expired(18.1) == [2]
    assert live.expired(1000.0) == [] and len(live) == 0


def test_a_removed_worker_is_never_reported_and_seen_does_not_bring_it_back():
    live = Liveness(5.0)
    live.add(7, 0.0)
    live.remove(7)
    live.seen(7, 1.0)
    assert 7 not in live.last
    assert live.expired(100.0) == []


def test_expiry_comes_in_deadline_order_and_each_worker_once():
    live = Liveness(3.0)
    for wid, t in ((5, 2.0), (6, 0.0), (7, 1.0)):
        live.add(wid, t)
    assert live.expired(4.5) == [6, 7]
    assert live.expired(4.6) == []
    assert live.expired(5.5) == [5]


def test_a_tick_looks_only_at_the_entries_due_not_at_every_worker():
    n = 10_000
    live = Liveness(10.0)
    live._heap = CountingHeap()
    for wid in range(n):
        live.add(wid, wid * 0.001)  # deadlines from 10.0 to 20.0
    for wid in range(n):
        live.seen(wid, 9.0)  # every worker heard from again: no deadline moves in the heap
    CountingHeap.looked = 0
    assert live.expired(5.0) == []  # a tick before any deadline: the top only
    assert CountingHeap.looked <= 2
    CountingHeap.looked = 0
    assert live.expired(10.05) == []  # about 50 entries due: they move to 19.0, none lost
    assert CountingHeap.looked < 50 * 2 * 20  # pops and pushes of O(log n), not n
    assert len(live._heap) == n
    assert sorted(live.expired(20.5)) == list(range(n))  # all silent since 9.0
    assert len(live) == 0


def test_the_server_drops_a_silent_worker_and_keeps_one_that_beats(tmp_path):
    cfg = ServerConfig(server_dir=tmp_path, host="127.0.0.1", heartbeat=0.5,
                       heartbeat_misses=1, write_access=False)  # silent for 2.5 s: lost

    async def worker(server, name):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        session = await client_handshake(reader, writer, server.key)
        writer.write(session.seal({"op": "worker_hello", "info": {
            "hostname": name, "pid": 1, "cpus": 1}}))
        welcome = await read_message(reader, session)
        return welcome["id"], reader, writer, session

    async def main():
        server = Server(cfg)
        await server.startup()
        loop_task = asyncio.ensure_future(server.main_loop())
        try:
            quiet, _, qw, _ = await worker(server, "quiet")
            beating, _, bw, session = await worker(server, "beating")
            assert set(server.core.live) == {quiet, beating}
            for _ in range(20):  # 4 s: past the limit
                await asyncio.sleep(0.2)
                bw.write(session.seal({"op": "hb"}))
            live = set(server.core.live)
            workers = server.core.state.workers
            return live, workers[quiet].state.value, workers[quiet].reason, \
                workers[beating].state.value
        finally:
            qw.close()
            bw.close()
            server.stopping.set()
            await loop_task
            await server.shutdown()

    live, quiet_state, reason, beating_state = asyncio.run(main())
    assert beating_state == "running" and quiet_state == "lost"
    assert "no heartbeat" in reason
    assert len(live) == 1



def test_the_server_raises_its_open_files_limit_to_the_hard_limit():
    import resource

    from hpcqueue.server.lifecycle import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        assert raise_fd_limit() == (low, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert raise_fd_limit() == (hard, hard)  # nothing left to raise
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
