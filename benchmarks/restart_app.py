"""The tasks of benchmarks/redis_restarts.py: each appends a line to a file named by its
argument, so that executions are counted apart from Redis (which the run restarts)."""

from __future__ import annotations

import os
import time

from taskrouter import task


def _mark(path: str, seconds: float) -> str:
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "marked"


@task(profile="restart_celery", name="restart.mark_celery")
def mark_celery(path: str, seconds: float = 0.0) -> str:
    return _mark(path, seconds)


@task(profile="restart_rq", name="restart.mark_rq")
def mark_rq(path: str, seconds: float = 0.0) -> str:
    return _mark(path, seconds)
