"""The worker: connects to the server, runs tasks, reports results."""
