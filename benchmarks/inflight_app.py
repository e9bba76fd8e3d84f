"""The tasks of ``benchmarks/inflight.py``: one long call to a local slow HTTP server,
through each lane of taskrouter and through raw Celery's threads pool, and a short
task whose enqueue-to-start time is watched meanwhile.

``python -m benchmarks.inflight_app raw-threads N`` runs raw Celery's threads pool with N
threads; ``raw-prefork N`` raw Celery's prefork pool; ``raw-rq-pool N`` RQ's own worker
pool: the references, built from the same environment as taskrouter's workers (broker,
key prefixes). Neither engine is imported at module level (RQ reads RQ_KEY_PREFIX then).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from taskrouter import task

RAW_CALL = "inflight.raw_call"

_redis: Any = None

# Each call opens its own connection, with the standard library: the figures are the
# lane's, not a client library's. (httpx shares one connection pool per client, and
# its pool looks at every connection of the client for every request: with thousands of
# calls in flight on one client, that work grows with the square of their number.)


def call(url: str) -> int:
    """A blocking HTTP GET (a ``def`` task's call)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=300)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        return len(conn.getresponse().read())
    finally:
        conn.close()


async def call_async(url: str) -> int:
    """An awaited HTTP GET (an ``async def`` task's call)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        request = f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return len(await reader.readexactly(length))
    finally:
        writer.close()


io_async = task(call_async, profile="io_calls", name="inflight.io_async")
io_sync = task(call, profile="io_calls", name="inflight.io_sync")
rq_call = task(call, profile="rq_calls", name="inflight.rq_call")
prefork_call = task(call, profile="prefork_calls", name="inflight.prefork_call")
long_io = task(call_async, profile="long_io", name="inflight.long_io")


def _stamp(key: str) -> None:
    """Push this task's start time onto a Redis list the benchmark waits on."""
    global _redis
    started = time.time()
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
    _redis.rpush(key, repr(started))


short = task(_stamp, profile="short", name="inflight.short")


def raw_app() -> Any:
    """A plain Celery app on the broker taskrouter's workers use, JSON only, acks_late,
    prefetch 1 (what a careful Celery user sets for long calls), with one task."""
    from celery import Celery

    from taskrouter.backends.celery_app import celery_url
    from taskrouter.settings import Settings

    settings = Settings.from_env()
    app = Celery("rawinflight", broker=celery_url(settings.broker_url), set_as_current=False)
    transport = {"global_keyprefix": settings.celery_key_prefix or ""}
    app.conf.update(
        accept_content=["json"],
        task_serializer="json",
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_transport_options=transport,
        worker_hijack_root_logger=False,
    )
    app.task(name=RAW_CALL)(call)
    return app


def _raw_celery(pool: str, size: int) -> int:
    app = raw_app()
    worker = app.Worker(
        queues=["raw-inflight"],
        concurrency=size,
        pool=pool,
        loglevel="WARNING",
        hostname=f"raw-{pool}-{os.getpid()}@bench",
        without_gossip=True,
        without_mingle=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


def _raw_rq_pool(size: int) -> int:
    import redis
    from rq.serializers import JSONSerializer
    from rq.worker_pool import WorkerPool

    conn = redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
    pool = WorkerPool(
        ["raw-inflight"], connection=conn, num_workers=size, serializer=JSONSerializer
    )
    pool.start(logging_level="WARNING")
    return 0


if __name__ == "__main__":
    kind, size = sys.argv[1], int(sys.argv[2])
    if kind == "raw-threads":
        sys.exit(_raw_celery("threads", size))
    if kind == "raw-prefork":
        sys.exit(_raw_celery("prefork", size))
    if kind == "raw-rq-pool":
        sys.exit(_raw_rq_pool(size))
    sys.exit("usage: python -m benchmarks.inflight_app raw-threads|raw-prefork|raw-rq-pool N")
