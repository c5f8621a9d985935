"""Server state and the one function that changes it: ``apply(event)``.

Every change to jobs, tasks and workers is an event (a plain dict that msgpack
can carry).  The live server builds an event, appends it to the journal and
applies it; a restart applies the journal's events in order and arrives at the
same state.  ``apply`` reads no clock and does no I/O, so replay is exact.

Events (``e`` is the kind, ``t`` the server's clock when it happened):

- ``server``: a server (re)started; tasks of the previous run go back to waiting
- ``ids``: the next job and worker ids (written by ``journal prune``)
- ``job``: a job was submitted (``id``, ``spec``); a spec with ``after`` waits for those
  jobs, and one of them that has already failed or been canceled cancels it at once (unless
  ``after_any``); see :mod:`hpcqueue.deps`
- ``worker``: a worker connected (``id``, ``info``)
- ``wgone``: a worker went away (``id``, ``reason``, ``crash``)
- ``start``: tasks were handed to a worker (``w``, ``tasks`` = [job, [index...], ...])
- ``done``: results (``w``, ``r`` = [[job, index, instance, exit, t0, t1, msg], ...], and for
  the tasks of function jobs ``o`` = [[job, index, instance, result], ...], the result bytes
  or the path of a file holding them: see :mod:`hpcqueue.calls`); a
  failed task retried with ``--retry-delay`` waits until ``t`` plus its delay (see
  :meth:`Job.finish <hpcqueue.jobs.Job.finish>`), and ``--retry-timeout`` counts from the
  ``t`` of its first failure
- ``due``: delayed retries whose time is at or before ``t`` go back to the queue (the
  server records it when the earliest one's time comes)
- ``back``: a worker handed tasks back unstarted (``w``, ``tasks`` as in ``start``)
- ``cancel``: jobs were canceled (``ids``); an open job is closed too
- ``append``: tasks were added to an open job (``id``, ``entries``: their entries, which get
  the ids after the job's last)
- ``close``: an open job takes no more tasks (``id``); it ends once its tasks have
- ``forget``: ended jobs are dropped (``ids``); their ids are not given out again
  (``next_job_id`` stays), and a snapshot written later simply lacks them
- a job that ends (in any of the events above) lets the jobs that wait for it go on, or
  cancels them with the reason: no event of its own, the same in a replay
- ``snapshot``, ``snapjob``, ``snapcols``: the whole state, written by compaction; see
  :mod:`hpcqueue.journal.snapshot`
- ``note``: a line for people (``msg``), e.g. the journal could be written again; no change
- ``aq_*`` and ``alloc_*``: allocation queues, see :mod:`hpcqueue.autoalloc.book`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from heapq import heappop, heappush

from hpcqueue.autoalloc.book import AllocBook
from hpcqueue.jobs import Job
from hpcqueue.journal import snapshot
from hpcqueue.model import FAILED, RUNNING, JobState, WorkerState


@dataclass
class WorkerRecord:
    id: int
    info: dict
    connected: float
    state: WorkerState = WorkerState.RUNNING
    ended: float | None = None
    reason: str | None = None
    cpus: int = 1
    res: dict = field(default_factory=dict)
    used_cpus: int = 0
    used_res: dict = field(default_factory=dict)
    #: (job id, index) of every task handed to this worker and not yet back
    tasks: set = field(default_factory=set)
    deadline: float | None = None  # server clock when the worker must be gone
    finished: int = 0

    def summary(self) -> dict:
        return {
            "id": self.id,
            "state": self.state.value,
            "hostname": self.info.get("hostname"),
            "cpus": self.cpus,
            "resources": {**self.res, **(self.info.get("res_idx") or {})},
            "running": len(self.tasks),
            "finished": self.finished,
            "connected": self.connected,
            "ended": self.ended,
            "reason": self.reason,
            "deadline": self.deadline,
            "batch_job": self.info.get("batch_job"),
            "alloc": self.info.get("alloc"),
            "pid": self.info.get("pid"),
        }


class ServerState:
    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.workers: dict[int, WorkerRecord] = {}
        self.next_job_id = 1
        self.next_worker_id = 1
        #: jobs that have tasks to hand out now, in dispatch order when `_ready_sorted`
        self.ready: dict[int, Job] = {}
        #: a heap of (time, job id, index) of delayed retries (`Job.retry_at`): an entry
        #: whose job no longer holds that time (canceled) is dropped when it comes up
        self.delayed: list[tuple[float, int, int]] = []
        self._ready_order: list[Job] | None = None
        #: how many times a job joined `ready` (dispatch looks at every worker again then)
        self.ready_added = 0
        #: job id -> the jobs that wait for it (`Job.waiting_on`), while it has not ended
        self.after: dict[int, list[Job]] = {}
        #: --unique key -> id of the unfinished job submitted with it
        self.unique: dict[str, int] = {}
        #: jobs that became done in the last apply; the server drains it
        self.just_done: list[Job] = []
        #: (worker id, job id, index) of running tasks canceled in the last apply
        self.to_kill: list[tuple[int, int, int]] = []
        #: (job id, index) of tasks that failed for good (no retry left) in the last apply;
        #: None (the default, and in a replay): not collected.  The server sets a list and
        #: drains it, to tell clients of failures as they happen.
        self.just_failed: list[tuple[int, int]] | None = None
        #: allocation queues and allocations (events aq_* and alloc_*)
        self.alloc = AllocBook()
        self._handlers = {name[4:]: getattr(self, name) for name in dir(self)
                          if name.startswith("_on_")}
        self._handlers.update({name[4:]: getattr(self.alloc, name) for name in dir(self.alloc)
                               if name.startswith("_on_")})
        self._handlers.update({kind: partial(snapshot.load, self) for kind in snapshot.KINDS})

    # ------------------------------------------------------------- dispatch order

    def ready_jobs(self) -> list[Job]:
        if self._ready_order is None:
            self._ready_order = sorted(self.ready.values(), key=lambda j: (-j.priority, j.id))
        return self._ready_order

    def _update_ready(self, job: Job) -> None:
        if job.available > 0:
            if job.id not in self.ready:
                self.ready[job.id] = job
                self._ready_order = None
                self.ready_added += 1
        elif job.id in self.ready:
            del self.ready[job.id]
            self._ready_order = None

    def _maybe_done(self, job: Job, t: float) -> None:
        if job.ended is None and job.done:
            self._ended(job, t)
            if job.id in self.after:
                self._release_dependants(job, t)

    def _ended(self, job: Job, t: float) -> None:
        job.ended = t
        self.just_done.append(job)
        key = job.spec.get("unique")
        if key is not None and self.unique.get(key) == job.id:
            del self.unique[key]

    def _release_dependants(self, job: Job, t: float) -> None:
        """JOB ended: each job waiting for it waits for one job less (and is ready when it
        waits for none), or is canceled with the reason if JOB failed or was canceled (unless
        it runs after any end); those canceled release theirs in turn.  O(the dependants):
        a loop, not a recursion, however long the chain."""
        stack = [job]
        while stack:
            dep = stack.pop()
            waiting = self.after.pop(dep.id, None)
            if not waiting:
                continue
            outcome = dep.job_state()
            for d in waiting:
                if d.done or dep.id not in d.waiting_on:
                    continue
                d.waiting_on.discard(dep.id)
                if outcome is not JobState.FINISHED and not d.spec.get("after_any"):
                    d.cancel(_dependency_failed(dep.id, outcome))
                    if d.ended is None and d.done:
                        self._ended(d, t)
                        stack.append(d)
                self._update_ready(d)

    def _wait_for(self, job: Job, t: float) -> None:
        """A new JOB with ``after``: it waits for those of its jobs that have not ended; one
        that has failed or was canceled cancels it at once (unless ``after_any``).  A job the
        state no longer holds (forgotten) had ended, and released its dependants then."""
        for dep_id in job.spec["after"]:
            dep = self.jobs.get(dep_id)
            if dep is None:
                continue
            if dep.ended is None:
                job.waiting_on.add(dep_id)
                self.after.setdefault(dep_id, []).append(job)
                continue
            outcome = dep.job_state()
            if outcome is not JobState.FINISHED and not job.spec.get("after_any"):
                job.cancel(_dependency_failed(dep_id, outcome))
                return

    def _add_job(self, job: Job) -> None:
        """A job that is new to the state (submitted, or loaded from a snapshot)."""
        self.jobs[job.id] = job
        self.next_job_id = max(self.next_job_id, job.id + 1)
        key = job.spec.get("unique")
        if key is not None and job.ended is None:
            self.unique[key] = job.id

    # ------------------------------------------------------------- apply

    def apply(self, ev: dict) -> None:
        self._handlers[ev["e"]](ev)

    def _on_server(self, ev: dict) -> None:
        t = ev["t"]
        for w in self.workers.values():
            if w.state is WorkerState.RUNNING:
                self._worker_gone(w, "server restarted", crash=False, t=t)

    def _on_note(self, ev: dict) -> None:
        pass

    def _on_ids(self, ev: dict) -> None:
        self.next_job_id = max(self.next_job_id, ev["job"])
        self.next_worker_id = max(self.next_worker_id, ev["worker"])

    def _on_job(self, ev: dict) -> None:
        spec = ev["spec"]
        if spec.get("open"):
            # an open job grows its entries and ids: its own copies, not the event's
            spec = {**spec, "entries": list(spec["entries"]), "ids": list(spec["ids"])}
        job = Job(ev["id"], spec, ev["t"])
        self._add_job(job)
        if spec.get("after"):
            self._wait_for(job, ev["t"])
        self._update_ready(job)
        self._maybe_done(job, ev["t"])

    def _on_append(self, ev: dict) -> None:
        job = self.jobs.get(ev["id"])
        if job is None or not job.open:  # (a journal pruned of the job: nothing to grow)
            return
        job.append(ev["entries"])
        self._update_ready(job)

    def _on_close(self, ev: dict) -> None:
        job = self.jobs.get(ev["id"])
        if job is None or not job.open:
            return
        job.open = False
        self._maybe_done(job, ev["t"])

    def _on_forget(self, ev: dict) -> None:
        for job_id in ev["ids"]:
            job = self.jobs.get(job_id)
            if job is None or not job.done:  # (the server forgets ended jobs only)
                continue
            del self.jobs[job_id]
            if self.ready.pop(job_id, None) is not None:
                self._ready_order = None
            key = job.spec.get("unique")
            if key is not None and self.unique.get(key) == job_id:
                del self.unique[key]
            # entries of its delayed retries in `delayed` are dropped when they come up

    def _on_worker(self, ev: dict) -> None:
        info = ev["info"]
        w = WorkerRecord(
            id=ev["id"],
            info=info,
            connected=ev["t"],
            cpus=int(info.get("cpus", 1)),
            res=dict(info.get("res") or {}),
            deadline=info.get("deadline"),
        )
        w.used_res = {k: 0 for k in w.res}
        self.workers[w.id] = w
        self.next_worker_id = max(self.next_worker_id, w.id + 1)
        self.alloc.worker_connected(w.id, info.get("alloc"), ev["t"], w.cpus)

    def _on_wgone(self, ev: dict) -> None:
        w = self.workers.get(ev["id"])
        if w is not None and w.state is WorkerState.RUNNING:
            self._worker_gone(w, ev["reason"], crash=ev.get("crash", False), t=ev["t"])

    def _worker_gone(self, w: WorkerRecord, reason: str, crash: bool, t: float) -> None:
        w.state = WorkerState.LOST if crash else WorkerState.STOPPED
        w.ended = t
        w.reason = reason
        self.alloc.worker_left(w.id, w.info.get("alloc"))
        touched = set()
        for job_id, i in sorted(w.tasks):  # an order that a snapshot's set keeps too
            job = self.jobs.get(job_id)
            if job is not None and job.state is not None and job.state[i] == RUNNING:
                job.put_back(i, crash)
                if self.just_failed is not None and job.state[i] == FAILED:
                    self.just_failed.append((job_id, i))
                touched.add(job)
        w.tasks.clear()
        w.used_cpus = 0
        w.used_res = {k: 0 for k in w.res}
        for job in touched:
            self._update_ready(job)
            self._maybe_done(job, t)

    def _on_start(self, ev: dict) -> None:
        w = self.workers[ev["w"]]
        t = ev["t"]
        wid = w.id
        tasks = ev["tasks"]
        add = w.tasks.add
        for k in range(0, len(tasks), 2):
            job = self.jobs[tasks[k]]
            idxs = tasks[k + 1]
            jid = job.id
            start = job.start
            for i in idxs:
                start(i, wid, t)
                add((jid, i))
            w.used_cpus += job.cpus * len(idxs)
            for name, count in job.res.items():
                w.used_res[name] = w.used_res.get(name, 0) + count * len(idxs)
            if job.available <= 0:  # no task left to hand out
                self._update_ready(job)

    def _release(self, w: WorkerRecord, job: Job, i: int) -> bool:
        key = (job.id, i)
        if key not in w.tasks:
            return False
        w.tasks.discard(key)
        w.used_cpus -= job.cpus
        for name, count in job.res.items():
            w.used_res[name] -= count
        return True

    def _on_done(self, ev: dict) -> None:
        w = self.workers.get(ev["w"])
        if w is None:
            return
        jobs = self.jobs
        tasks = w.tasks
        wid = w.id
        # the allocation the worker came from, if any: its tasks' run times add up there
        alloc = self.alloc.by_id.get(w.info.get("alloc")) if self.alloc.by_id else None
        if alloc is not None and wid not in alloc.workers:
            alloc = None
        for job_id, i, inst, code, t0, t1, msg in ev["r"]:
            job = jobs.get(job_id)
            if job is None or job.state is None or job.state[i] != RUNNING:
                continue  # a stale result: canceled, or from a previous instance
            if job.starts[i] - 1 != inst or job.worker[i] != wid:
                continue
            key = (job_id, i)
            if key not in tasks:
                continue
            tasks.discard(key)
            w.used_cpus -= job.cpus
            if job.res:
                for name, count in job.res.items():
                    w.used_res[name] -= count
            w.finished += 1
            if job.finish(i, code, t0, t1, msg, ev["t"]) and job.retry_delay is not None:
                at = job.retry_at.get(i)
                if at is not None:
                    heappush(self.delayed, (at, job_id, i))
            if alloc is not None:
                start = job.t0[i]
                if start and t1 > start:
                    alloc.task_ran(start, t1, job.cpus)
            if self.just_failed is not None and job.state[i] == FAILED:
                self.just_failed.append((job_id, i))
            counts = job.counts  # waiting, running, ...
            if counts[0] and (job_id not in self.ready or job.dependants is not None):
                self._update_ready(job)
            if counts[1] == 0:
                self._maybe_done(job, t1 or ev["t"])
        out = ev.get("o")
        if out:
            self._results(wid, out)

    def _results(self, wid: int, out: list) -> None:
        """Keep the results of tasks whose ends this ``done`` took (not stale ones: of
        another instance or worker, or of a task that is still running)."""
        jobs = self.jobs
        for job_id, i, inst, result in out:
            job = jobs.get(job_id)
            if (job is not None and job.state is not None and job.state[i] != RUNNING
                    and job.starts[i] - 1 == inst and job.worker[i] == wid):
                job.results[i] = result

    def _on_due(self, ev: dict) -> None:
        t = ev["t"]
        heap, jobs = self.delayed, self.jobs
        woken: dict[int, Job] = {}
        while heap and heap[0][0] <= t:
            at, job_id, i = heappop(heap)
            job = jobs.get(job_id)
            if job is not None and job.wake(i, at):
                woken[job_id] = job
        for job in woken.values():
            self._update_ready(job)

    def _on_back(self, ev: dict) -> None:
        w = self.workers.get(ev["w"])
        if w is None:
            return
        tasks = ev["tasks"]
        for k in range(0, len(tasks), 2):
            job = self.jobs.get(tasks[k])
            if job is None:
                continue
            for i in tasks[k + 1]:
                if job.state is not None and job.state[i] == RUNNING and self._release(w, job, i):
                    job.put_back(i, crashed=False)
                    if self.just_failed is not None and job.state[i] == FAILED:
                        self.just_failed.append((job.id, i))
            self._update_ready(job)
            self._maybe_done(job, ev["t"])

    def _on_cancel(self, ev: dict) -> None:
        for job_id in ev["ids"]:
            job = self.jobs.get(job_id)
            if job is None or job.done:
                continue
            for i in job.cancel():
                w = self.workers.get(job.worker[i])
                if w is not None and self._release(w, job, i):
                    self.to_kill.append((w.id, job.id, i))
            self._update_ready(job)
            self._maybe_done(job, ev["t"])


def _dependency_failed(dep_id: int, outcome: JobState) -> str:
    what = "failed" if outcome is JobState.FAILED else "was canceled"
    return f"canceled: job {dep_id} it depends on {what}"


def restore(events) -> ServerState:
    state = ServerState()
    for ev in events:
        state.apply(ev)
    state.just_done.clear()
    state.to_kill.clear()
    return state
