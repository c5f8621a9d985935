"""Transports: how a rendered script reaches the scheduler."""
