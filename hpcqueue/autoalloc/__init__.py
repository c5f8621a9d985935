"""Automatic allocation.

Vocabulary:
- an *allocation* is one batch job submitted by the server; it boots workers
  that connect back;
- an *allocation queue* is a recipe (scheduler, template, options) plus limits
  for making allocations.

The pieces: ``policy`` decides how many allocations to submit (pure);
``service`` is the loop that refreshes statuses, asks the policy and submits;
``render`` turns a queue into a job script; a *scheduler* (``schedulers/``)
decides what is written and how statuses read; a *transport*
(``transports/``) decides how a script reaches the scheduler.
"""
