"""Dependencies: a job that waits for other jobs (`submit --depends-on`), and tasks of one
job that wait for other tasks of it (the ``deps`` of `--from-json` elements, or
``Client.submit(deps=...)``).

A job spec carries them as:

- ``after``: the ids of the jobs it waits for (sorted; the server resolves a selector such
  as ``1-3,last`` to them at submit, and refuses an id it does not hold);
- ``after_any``: true to run once they have ended however they ended; without it, a
  dependency that fails or is canceled cancels the job (with the reason);
- ``task_deps``: ``[[task id, [task ids it waits for]], ...]``, ids of the job's own tasks.

This module holds the pure checks (unknown ids, a task waiting for itself, cycles) and the
reading of ``deps`` from JSON elements; :mod:`hpcqueue.jobs` and :mod:`hpcqueue.state` keep
the counters that make a dependant ready.  Errors are UsageError, naming what is wrong.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping

from hpcqueue.exceptions import UsageError
from hpcqueue.model import IdRanges

#: edges (one task waiting for one other) a job may hold: the server keeps two lists of them
MAX_TASK_DEPS = 10_000_000
#: jobs one job may wait for
MAX_AFTER = 100_000


def deps_of_items(items: list[str]) -> list[list] | None:
    """``task_deps`` from the ``deps`` fields of `--from-json` elements (each as JSON text;
    element K is task K), or None when no element has one.  An element with ``deps`` must be
    an object whose ``deps`` is a list of task ids (element positions)."""
    out = []
    for k, text in enumerate(items):
        if '"deps"' not in text:  # the cheap test first: most elements have none
            continue
        value = json.loads(text)
        if not isinstance(value, dict) or "deps" not in value:
            continue
        before = value["deps"]
        if not (isinstance(before, list) and all(_is_int(b) for b in before)):
            raise UsageError(f"element {k}: 'deps' must be a list of task ids (the positions "
                             f"of other elements, from 0), not {json.dumps(before)[:60]}")
        if before:
            out.append([k, before])
    return out or None


def deps_of_mapping(value) -> list[list] | None:
    """``task_deps`` from the Python API's ``deps``: a mapping {task id: [task ids]} or a list
    of (task id, [task ids]) pairs."""
    if value is None:
        return None
    pairs = value.items() if isinstance(value, Mapping) else value
    out = []
    try:
        for tid, given in pairs:
            before = [given] if _is_int(given) else list(given)
            if not _is_int(tid) or not all(_is_int(b) for b in before):
                raise TypeError
            if before:
                out.append([tid, before])
    except (TypeError, ValueError):
        raise UsageError(f"deps must map task ids to lists of task ids, e.g. {{2: [0, 1]}}, "
                         f"not {value!r:.60}") from None
    return out or None


def check_task_deps(pairs, ids: IdRanges) -> list[list]:
    """``task_deps`` checked against the job's task ids: sorted by task, each list sorted and
    without repeats.  Refuses an id the job does not have, a task waiting for itself, a
    task given twice, and a cycle (naming it)."""
    if not isinstance(pairs, list):
        raise UsageError(f"task dependencies must be a list of [task id, [task ids]] pairs, "
                         f"not {str(pairs)[:60]}")
    seen: dict[int, list[int]] = {}
    edges = 0
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and _is_int(pair[0])
                and isinstance(pair[1], list) and all(_is_int(b) for b in pair[1])):
            raise UsageError(f"task dependencies must be [task id, [task ids]] pairs; "
                             f"{str(pair)[:60]} is not one")
        tid, before = pair[0], sorted(set(pair[1]))
        if ids.index_of(tid) is None:
            raise UsageError(f"task {tid} has dependencies but the job has no task {tid}")
        if tid in seen:
            raise UsageError(f"task {tid} is given dependencies twice: give them in one list")
        for b in before:
            if b == tid:
                raise UsageError(f"task {tid} depends on itself: a task cannot wait for "
                                 "itself")
            if ids.index_of(b) is None:
                raise UsageError(f"task {tid} depends on task {b}, which the job does not "
                                 f"have (its task ids are {_brief_ids(ids)})")
        edges += len(before)
        if edges > MAX_TASK_DEPS:
            raise UsageError(f"a job holds at most {MAX_TASK_DEPS:,} task dependencies")
        if before:
            seen[tid] = before
    cycle = find_cycle(seen)
    if cycle:
        path = " -> ".join(f"task {t}" for t in cycle)
        raise UsageError(f"the task dependencies form a cycle: {path} waits for itself; "
                         "remove one of these dependencies")
    return [[tid, seen[tid]] for tid in sorted(seen)]


def find_cycle(graph: Mapping[int, Iterable[int]]) -> list[int] | None:
    """A cycle of GRAPH (node -> the nodes it waits for) as [a, b, ..., a], or None.
    Iterative depth-first search: O(nodes + edges), no recursion limit."""
    color: dict[int, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if color.get(root):
            continue
        path = [root]
        stack = [iter(graph.get(root, ()))]
        color[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = 2
                stack.pop()
                continue
            c = color.get(nxt)
            if c == 1:
                return path[path.index(nxt):] + [nxt]
            if c is None:
                color[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return None


def check_after(value) -> list[int] | str | None:
    """``after`` as a client sends it: a selector (text such as ``1-3,last``) or a list of job
    ids; the server resolves it (see :func:`hpcqueue.server.handlers.submit`)."""
    if value is None or value == [] or value == "":
        return None
    if isinstance(value, str):
        from hpcqueue.selectors import parse_jobs

        sel = parse_jobs(value)
        if sel.all:
            raise UsageError("--depends-on all: name the jobs to wait for (ids, ranges or "
                             "last)")
        return value
    if not (isinstance(value, list) and all(_is_int(v) and v >= 1 for v in value)):
        raise UsageError(f"the jobs to depend on must be a selector (e.g. '1-3,last') or a "
                         f"list of job ids, not {str(value)[:60]}")
    if len(value) > MAX_AFTER:
        raise UsageError(f"a job may depend on at most {MAX_AFTER:,} jobs")
    return sorted(set(value))


def _brief_ids(ids: IdRanges) -> str:
    text = ids.spec()
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
