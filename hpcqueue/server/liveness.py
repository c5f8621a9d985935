"""Which workers have gone silent: a heap of deadlines, not a scan of every worker.

A message from a worker only notes when it was seen (:attr:`Liveness.last`, one dict store:
O(1) per heartbeat).  Each connected worker has one entry (deadline, id) in a heap, its
deadline no later than the real one (last seen + limit).  Once a tick, :meth:`expired` pops
the entries whose deadline has passed: a worker seen since goes back with its new deadline,
one that has not is silent.  So a tick looks only at the entries due (each worker about once
per `limit` seconds, at O(log workers)), however many workers are connected, and a silent
worker is found within one tick of its deadline.
"""

from __future__ import annotations

from heapq import heappop, heappush


class Liveness:
    """The last time each worker was seen, and the deadlines by which it must be seen again."""

    __slots__ = ("limit", "last", "_heap")

    def __init__(self, limit: float):
        #: seconds a worker may stay silent
        self.limit = limit
        #: worker id -> when it was last seen (the caller's clock: time.monotonic())
        self.last: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self.last)

    def add(self, wid: int, now: float) -> None:
        """Watch worker WID, seen NOW."""
        self.last[wid] = now
        heappush(self._heap, (now + self.limit, wid))

    def seen(self, wid: int, now: float) -> None:
        """Worker WID sent something NOW (the hot path may store into `last` itself)."""
        if wid in self.last:
            self.last[wid] = now

    def remove(self, wid: int) -> None:
        """Stop watching WID (it left); its heap entry is dropped when it comes due."""
        self.last.pop(wid, None)

    def expired(self, now: float) -> list[int]:
        """The workers silent for more than `limit` seconds at NOW, in deadline order; they
        are no longer watched."""
        heap, last, limit = self._heap, self.last, self.limit
        out = []
        while heap and heap[0][0] < now:
            _, wid = heappop(heap)
            seen = last.get(wid)
            if seen is None:
                continue  # removed since
            if now - seen > limit:
                del last[wid]
                out.append(wid)
            else:
                heappush(heap, (seen + limit, wid))
        return out
