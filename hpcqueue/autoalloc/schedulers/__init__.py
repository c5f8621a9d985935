"""Scheduler dialects: what a job script says and how statuses read."""
