"""The tasks of benchmarks/soak.py (and of the Redis-full tests): one per engine;
``fail`` makes a job fail, so that the engines' failure registries are exercised too,
and ``seconds`` keeps it running that long."""

from __future__ import annotations

import time

from taskrouter import task


def _work(i: int, fail: bool, seconds: float) -> int:
    if seconds:
        time.sleep(seconds)
    if fail:
        raise ValueError(f"soak job {i} fails on purpose")
    return i


@task(profile="soak_celery", name="soak.celery")
def soak_celery(i: int, fail: bool = False, seconds: float = 0.0) -> int:
    return _work(i, fail, seconds)


@task(profile="soak_rq", name="soak.rq")
def soak_rq(i: int, fail: bool = False, seconds: float = 0.0) -> int:
    return _work(i, fail, seconds)
