"""hpcqueue: a task queue for HPC clusters.

A journaled server hands shell-command tasks to workers that pull them over an
authenticated, encrypted TCP connection.  As a library (docs/api.md)::

    import hpcqueue

    with hpcqueue.LocalCluster(workers=2) as cluster:
        job = cluster.client().submit("echo $HPCQUEUE_TASK_ID", array="1-100")
        print(job.wait())

The names below are imported when first used (PEP 562), so `import hpcqueue` stays
cheap and `hpcqueue worker start` quick.
"""

__version__ = "0.1.0"

#: public name -> the module that holds it
_API = {
    "Client": "hpcqueue.client",
    "Job": "hpcqueue.views",
    "JobSummary": "hpcqueue.views",
    "Task": "hpcqueue.views",
    "Failures": "hpcqueue.watch",
    "FailedTask": "hpcqueue.watch",
    "LocalCluster": "hpcqueue.cluster",
    "JobState": "hpcqueue.model",
    "TaskState": "hpcqueue.model",
    "HpcqueueError": "hpcqueue.exceptions",
    "UsageError": "hpcqueue.exceptions",
    "RequestError": "hpcqueue.exceptions",
    "Refused": "hpcqueue.exceptions",
    "NotFound": "hpcqueue.exceptions",
    "Unavailable": "hpcqueue.exceptions",
    "ServerUnreachable": "hpcqueue.exceptions",
    "NoServerError": "hpcqueue.exceptions",
    "RemoteError": "hpcqueue.exceptions",
    "OutputUnreadable": "hpcqueue.exceptions",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcqueue' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {k for k in globals() if k.startswith("__")})
