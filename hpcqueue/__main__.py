"""`python -m hpcqueue` runs the command line."""

from hpcqueue.cli import main

main()
