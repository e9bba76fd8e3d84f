"""Bounding the engines' own keys for taskrouter's jobs (issue 15): each pass of the
janitor trims what an engine would otherwise keep past ``keep_results``.

- RQ: a job's hash and result expire with ``result_ttl``/``failure_ttl`` (the profile's
  ``keep_results``), but the finished and failed registries keep their entries until a
  worker's maintenance (every 10 minutes, only while a worker runs) and the canceled
  registry forever. ``trim_rq.lua`` removes, in bounded batches, the entries whose RQ job
  has expired. A queued RQ job canceled through taskrouter gets the same TTL as a
  finished one (``RQBackend.stop``).
- Celery: messages carry only ``(job id, dispatch)``; isolated jobs store no result
  (``task_ignore_result``) and canvas results expire with ``result_expires`` (the longest
  ``keep_results``); kombu's unacked entries go with each acknowledgement, and those a
  dead worker held come back after the visibility window. Nothing to trim.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from taskrouter.derive import engine_queues
from taskrouter.settings import SWEEP_BATCH, SWEEP_BATCHES

if TYPE_CHECKING:
    from .runtime import Runtime

# RQ 3.0's registries that an expired job leaves entries in, by how the entry's end is
# known (a unit test compares the names with RQ's classes).
RQ_BY_SCORE = ("finished", "failed")
RQ_BY_JOB = ("canceled",)


def rq_registries(prefix: str, queues: list[str]) -> tuple[list[str], list[str]]:
    """The keys of the registries of ``queues``: (trimmed by score, trimmed by job hash)."""
    by_score = [f"{prefix}:{kind}:{q}" for q in queues for kind in RQ_BY_SCORE]
    by_job = [f"{prefix}:{kind}:{q}" for q in queues for kind in RQ_BY_JOB]
    return by_score, by_job


def trim(runtime: Runtime, *, limit: int = SWEEP_BATCH, batches: int = SWEEP_BATCHES) -> int:
    """One pass over the engines' registries; returns how many entries went."""
    queues = engine_queues(runtime.derived, "rq")
    if not queues:
        return 0
    rq_prefix = runtime.settings.rq_key_prefix or "rq"
    by_score, by_job = rq_registries(rq_prefix, queues)
    removed = 0
    for _ in range(batches):
        n = int(
            runtime.store.run(
                "trim_rq",
                time.time(),
                limit,
                f"{rq_prefix}:job:",
                len(by_score),
                *by_score,
                *by_job,
            )
        )
        removed += n
        if n < limit:
            break
    return removed
