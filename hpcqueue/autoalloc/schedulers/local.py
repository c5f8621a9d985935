"""The local scheduler: an allocation is a worker process group on this machine."""

from __future__ import annotations

from hpcqueue.autoalloc.schedulers.base import Scheduler


class Local(Scheduler):
    name = "local"
    template = "local.sh.j2"
    queued_words = frozenset()
    running_words = frozenset({"running"})
    #: `--transport cli` (the default) is what users give; the local transport delivers
    transports = ("cli",)

    def deliver_with(self, transport: str) -> str:
        return "local"
