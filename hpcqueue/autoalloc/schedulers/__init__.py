"""Scheduler dialects: what a job script says and how statuses read.

Each module here holds one scheduler class (see :mod:`hpcqueue.autoalloc.backends`, which
finds them).  The path is extended so that a directory of the same layout on ``PYTHONPATH``
adds schedulers of its own.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
