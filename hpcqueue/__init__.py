"""hpcqueue: a task queue for HPC clusters.

A journaled server hands shell-command tasks to workers that pull them over an
authenticated, encrypted TCP connection.  Nothing heavy is imported here, so
`hpcqueue worker start` stays quick.
"""

__version__ = "0.1.0"
