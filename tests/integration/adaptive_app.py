"""The task of the adaptive routing tests (``--app tests.integration.adaptive_app``): it
counts its runs per marker in Redis, then sleeps as long as it is told."""

from __future__ import annotations

import os
import time

import redis

from taskrouter import task


def runs_key() -> str:
    return f"{os.environ['TASKROUTER_KEY_PREFIX']}:test-runs"


@task(profile="adaptive", name="adapt.work")
def work(seconds: float, marker: str) -> str:
    client = redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
    try:
        client.hincrby(runs_key(), marker, 1)
    finally:
        client.close()
    time.sleep(seconds)
    return marker


@task(profile="chat", name="adapt.chat")
def chat(seconds: float, marker: str) -> str:
    """The same, for a kind: io profile (the I/O lane runs it in a pool thread)."""
    return work(seconds, marker)


@task(profile="waits", name="adapt.wait")
def wait(seconds: float, marker: str) -> str:
    return work(seconds, marker)
