"""Run one Python call for a worker, in the worker's own Python:

    python -m hpcqueue.worker.callrun FUNCTION ARGS OUTCOME

FUNCTION holds the cloudpickled callable, ARGS the pickled ``(args, kwargs)`` of the call;
the outcome (see :mod:`hpcqueue.calls`) is written to OUTCOME.  Exit 0 when the call
returned, 1 when it raised (or its payload could not be loaded, or its value pickled), so
that a failed call is a failed task; 2 when the outcome could not be written at all.  What
the call prints goes to the task's stdout and stderr, as a command's would.

It imports nothing of hpcqueue's beyond this package's empty ``__init__``, and nothing
heavy besides cloudpickle and msgpack.
"""

from __future__ import annotations

import os
import sys


def run(fn_path: str, args_path: str):
    """The outcome of the call, as a map, and the exit code."""
    try:
        import cloudpickle

        with open(fn_path, "rb") as f:
            fn = cloudpickle.loads(f.read())
        with open(args_path, "rb") as f:
            args, kwargs = cloudpickle.loads(f.read())
        value = fn(*args, **kwargs)
        return {"ok": True, "value": cloudpickle.dumps(value)}, 0
    except BaseException as e:  # whatever the call raised is its outcome
        return failure(e), 1


def failure(e: BaseException) -> dict:
    import traceback

    tb = e.__traceback__
    if tb is not None and tb.tb_frame.f_code is run.__code__:
        tb = tb.tb_next  # from the call on: this module's frame is no news to the user
    text = "".join(traceback.format_exception(type(e), e, tb))
    kind = type(e)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    try:
        import cloudpickle

        exc = cloudpickle.dumps(e)
    except BaseException:  # not picklable (or no cloudpickle): text only
        exc = None
    return {"ok": False, "type": name, "message": str(e), "traceback": text, "exc": exc}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m hpcqueue.worker.callrun FUNCTION ARGS OUTCOME",
              file=sys.stderr)
        return 2
    outcome, code = run(argv[0], argv[1])
    import msgpack

    try:
        data = msgpack.packb(outcome, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. a message with lone surrogates
        data, code = msgpack.packb(failure(e), use_bin_type=True), 1
    temp = argv[2] + ".tmp"
    try:
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, argv[2])
    except OSError as e:
        print(f"hpcqueue: cannot write the outcome of the call to {argv[2]}: {e.strerror}",
              file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
