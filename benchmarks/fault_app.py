"""The tasks of ``benchmarks/faults.py`` (workers load it with ``--app benchmarks.fault_app``).

Each task first increments the Redis counter named by its first argument, then sleeps
(the I/O lane's task awaits its sleep on the lane's event loop).
The counter is the fault script's own count of executions, independent of taskrouter's
records: a job that ran twice shows 2 there whatever its record says.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskrouter import task

SHORT_PROFILE, LONG_PROFILE, IO_PROFILE = "fault_short", "fault_long", "fault_io"
# The lane of each profile's jobs (fault_policy.yaml), as the fault script names them.
PROFILE_LANE = {SHORT_PROFILE: "celery", LONG_PROFILE: "rq", IO_PROFILE: "io"}

_client: Any = None
_client_pid = -1


def _redis() -> Any:
    """This process's client (a forked work-horse or pool child builds its own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        import redis

        _client = redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
        _client_pid = os.getpid()
    return _client


def _run(counter: str, seconds: float) -> str:
    _redis().incr(counter)
    time.sleep(seconds)
    return counter


@task(profile=SHORT_PROFILE, name="fault.short")
def short_job(counter: str, seconds: float) -> str:
    """Celery: a short task."""
    return _run(counter, seconds)


@task(profile=LONG_PROFILE, name="fault.long")
def long_job(counter: str, seconds: float) -> str:
    """RQ: a long-ish task."""
    return _run(counter, seconds)


@task(profile=IO_PROFILE, name="fault.call")
async def io_call(counter: str, seconds: float) -> str:
    """I/O lane: a call that waits (acknowledged at its start, then kept by its lease)."""
    await asyncio.to_thread(_redis().incr, counter)
    await asyncio.sleep(seconds)
    return counter
