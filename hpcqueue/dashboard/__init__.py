"""`hpcqueue dashboard`: a live terminal view of a server, for login nodes over SSH.

- :mod:`~hpcqueue.dashboard.link`: the one door to the server (requests and the `watch`
  stream), kept small so that it can move to the Python client later;
- :mod:`~hpcqueue.dashboard.board`: what is shown, as plain values (pure: updates in, rows
  out);
- :mod:`~hpcqueue.dashboard.app`: the textual app (textual is imported there only).
"""
