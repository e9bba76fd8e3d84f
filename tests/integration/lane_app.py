"""The tasks the I/O lane's tests load (``--app tests.integration.lane_app``): calls to
a slow HTTP server (tests/integration/slow_http.py), awaited or blocking."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from taskrouter import RetryAfter, current_job, task

_async_client: httpx.AsyncClient | None = None
_sync_client = httpx.Client(limits=httpx.Limits(max_connections=None), timeout=120)


def _client() -> httpx.AsyncClient:
    # One client per process, made on the lane's event loop on first use.
    global _async_client
    if _async_client is None:
        _async_client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=120)
    return _async_client


@task(profile="calls", name="lane.fetch")
async def fetch(url: str) -> str:
    response = await _client().get(url)
    return response.text


@task(profile="calls", name="lane.fetch_sync")
def fetch_sync(url: str) -> str:
    return _sync_client.get(url).text


@task(profile="capped", name="lane.capped")
async def capped(url: str) -> str:
    return (await _client().get(url)).text


@task(profile="rated", name="lane.rated")
async def rated() -> float:
    return time.time()


@task(profile="timed", name="lane.timed")
async def timed(url: str) -> str:
    return (await _client().get(url)).text


@task(profile="timed", name="lane.timed_sync")
def timed_sync(seconds: float) -> str:
    time.sleep(seconds)  # interruptible: the lane raises its timeout in this thread
    return "slept"


@task(profile="flaky", name="lane.flaky")
async def flaky(url: str) -> str:
    text = (await _client().get(url)).text
    if text == "waited 0.05":  # the first answer: fail once, as a flaky provider does
        raise ConnectionError("upstream hiccup")
    return text


@task(profile="calls", name="lane.block")
async def block(seconds: float) -> str:
    time.sleep(seconds)  # blocks the event loop on purpose
    return "blocked"


@task(profile="calls", name="lane.step")
async def step(value: Any, add: int) -> Any:
    await asyncio.sleep(0.01)
    return value + add


@task(profile="keyed", name="lane.keyed")
async def keyed(tenant: str, spans: str, wait_first: bool) -> None:
    """Holds one of its tenant's slots 0.3 s; with ``wait_first``, its first run raises
    RetryAfter (after a checkpoint that the next run reads back)."""
    import redis.asyncio

    job = current_job()
    if wait_first and "waited" not in job.checkpoints:
        job.checkpoint("waited", True)
        raise RetryAfter(0.5, "the provider is busy")
    start = time.time()
    await asyncio.sleep(0.3)
    client = redis.asyncio.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
    await client.rpush(spans, f"{tenant}:{start:.6f}:{time.time():.6f}")
    await client.aclose()
