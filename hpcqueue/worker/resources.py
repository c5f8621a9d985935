"""A worker's resources: counts (`licenses=4`) or lists of indices (`gpus=[0,1,2,3]`),
the GPUs it finds when it is given none, and which indices each task holds.

Vocabulary: an *indexed* resource is a list of device indices; a task that asks for N of it
gets N indices of its own, which no other task holds while it runs.  The server only counts
(a worker offers `len(indices)`); the worker picks the indices when it starts a task.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections import deque
from typing import Mapping, Sequence

from hpcqueue.exceptions import UsageError
from hpcqueue.model import MAX_COUNT, RESOURCE_NAME

log = logging.getLogger("hpcqueue.worker")

#: what each GPU vendor's runtime reads to pick the devices a process sees, by physical
#: index (HIP_VISIBLE_DEVICES counts among the devices ROCR_VISIBLE_DEVICES leaves: a task is
#: given ROCR's, and HIP's is dropped)
GPU_VARIABLES = {"nvidia": "CUDA_VISIBLE_DEVICES", "amd": "ROCR_VISIBLE_DEVICES"}
DROPPED_VARIABLES = {"amd": ("HIP_VISIBLE_DEVICES",)}
NVIDIA_SMI_TIMEOUT = 10.0  # seconds `nvidia-smi -L` may take
_SMI_LINE = re.compile(r"GPU (\d+):")
_INDEX_LIST = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)?\s*,?\s*\]")


def parse_worker_resources(items: Sequence[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """`worker start --resource` items: (counts of every resource, indices of the indexed
    ones).  `gpus=2` is a count, `gpus=[0,1]` two indices; raises UsageError naming the
    item."""
    counts: dict[str, int] = {}
    indices: dict[str, list[int]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not RESOURCE_NAME.fullmatch(name):
            raise UsageError(f"invalid resource {item!r}: use NAME=COUNT or NAME=[INDICES], "
                             "e.g. gpus=2 or gpus=[0,1]")
        if name == "cpus":
            raise UsageError("give cpus with --cpus, not --resource cpus=N")
        if value.startswith("["):
            m = _INDEX_LIST.fullmatch(value)
            if not m:
                raise UsageError(f"invalid resource {item!r}: a list of indices is whole "
                                 "numbers in brackets, e.g. gpus=[0,1,2,3]")
            idx = [int(x) for x in m.group(1).split(",")] if m.group(1) else []
            if len(set(idx)) != len(idx):
                raise UsageError(f"invalid resource {item!r}: an index is given twice")
            if any(i > MAX_COUNT for i in idx):
                raise UsageError(f"invalid resource {item!r}: an index is over {MAX_COUNT}")
            indices[name] = idx
            counts[name] = len(idx)
            continue
        try:
            count = int(value)
        except ValueError:
            raise UsageError(f"invalid resource {item!r}: the count must be a whole number, "
                             "or give indices, e.g. gpus=[0,1]") from None
        if not 0 <= count <= MAX_COUNT:
            raise UsageError(f"invalid resource {item!r}: the count must be from 0 to "
                             f"{MAX_COUNT}")
        indices.pop(name, None)
        counts[name] = count
    return counts, indices


def format_resource(value) -> str:
    """A resource as `worker info` shows it: `4` or `[0,1,2,3]`."""
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


# ------------------------------------------------------------------ detection


def _visible(text: str) -> list[int] | None:
    """Indices in a *_VISIBLE_DEVICES value; None if they are not all whole numbers (UUIDs,
    which we do not map to indices)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if any(p == "-1" or p.lower() == "nodevfiles" for p in parts):
        return []  # "no device", as CUDA and Slurm write it
    if not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def nvidia_smi() -> list[int]:
    """Indices of the GPUs `nvidia-smi -L` lists; [] if it is missing or fails."""
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                           timeout=NVIDIA_SMI_TIMEOUT, errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return []
    if p.returncode != 0:
        log.debug("nvidia-smi -L exited %s: %s", p.returncode, p.stderr.strip()[:200])
        return []
    return [int(m.group(1)) for m in map(_SMI_LINE.match, p.stdout.splitlines()) if m]


def detect_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, list[int]]:
    """(vendor, indices) of the GPUs this worker may use: CUDA_VISIBLE_DEVICES when set (a
    batch job's GPUs: Slurm and PBS set it), else ROCR_VISIBLE_DEVICES (AMD), else what
    `nvidia-smi -L` lists.  ("nvidia", []) when there are none."""
    env = os.environ if environ is None else environ
    for vendor, var in (("nvidia", "CUDA_VISIBLE_DEVICES"), ("amd", "ROCR_VISIBLE_DEVICES")):
        if var in env:
            idx = _visible(env[var])
            if idx is None:
                log.warning("%s=%s does not list GPU indices (UUIDs?): give the worker "
                            "--resource gpus=[...] to use them", var, env[var])
                return vendor, []
            return vendor, idx
    return "nvidia", nvidia_smi()


def worker_gpus(res: dict[str, int], indices: dict[str, list[int]],
                environ: Mapping[str, str] | None = None):
    """(vendor, res, indices) of a worker once its GPUs are looked for: with no `gpus`
    given, those it detects; with `gpus=N` (a count, as an allocation's worker is started
    with), the first N it detects, so that each task learns its own; with `gpus=[...]`,
    those indices."""
    if "gpus" in indices or res.get("gpus", 1) == 0:
        return gpu_vendor(environ), res, indices
    vendor, found = detect_gpus(environ)
    res, indices = dict(res), dict(indices)
    if "gpus" not in res:
        if found:
            res["gpus"], indices["gpus"] = len(found), found
    elif res["gpus"] and len(found) >= res["gpus"]:
        indices["gpus"] = found[:res["gpus"]]
    elif res["gpus"]:
        log.warning("gpus=%d given but %d GPU(s) found: the worker counts them, and tasks "
                    "are not told which to use (give gpus=[0,1,...] for that)",
                    res["gpus"], len(found))
    return vendor, res, indices


def gpu_vendor(environ: Mapping[str, str] | None = None) -> str:
    """Whose variables tell a task its GPUs: AMD's when the worker sees only those."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" not in env and "ROCR_VISIBLE_DEVICES" in env:
        return "amd"
    return "nvidia"


# ------------------------------------------------------------------ assignment


def env_name(resource: str) -> str:
    """HPCQUEUE_RESOURCE_<NAME>: the variable that tells a task its indices."""
    return "HPCQUEUE_RESOURCE_" + re.sub(r"[^A-Za-z0-9_]", "_", resource).upper()


class IndexPool:
    """The free indices of a worker's indexed resources.  `take` and `give` are O(count):
    a task holds its indices until it ends, and no other task gets them meanwhile."""

    __slots__ = ("free",)

    def __init__(self, indices: Mapping[str, Sequence[int]]):
        self.free = {name: deque(idx) for name, idx in indices.items()}

    def take(self, wants: Mapping[str, int]) -> dict[str, list[int]] | None:
        """Indices for a task that asks for WANTS (name -> count); None if it asks for no
        indexed resource.  The caller has checked that the counts fit."""
        out = None
        for name, count in wants.items():
            free = self.free.get(name)
            if free is not None and count:
                if out is None:
                    out = {}
                out[name] = [free.popleft() for _ in range(count)]
        return out

    def give(self, held: Mapping[str, list[int]] | None) -> None:
        for name, idx in (held or {}).items():
            self.free[name].extend(idx)


def set_task_env(env: dict[str, str], held: Mapping[str, list[int]], vendor: str) -> None:
    """Tell a task (its environment ENV) the indices it holds."""
    for name, idx in held.items():
        text = ",".join(map(str, idx))
        env[env_name(name)] = text
        if name == "gpus":
            env[GPU_VARIABLES.get(vendor, GPU_VARIABLES["nvidia"])] = text
            for var in DROPPED_VARIABLES.get(vendor, ()):
                env.pop(var, None)
