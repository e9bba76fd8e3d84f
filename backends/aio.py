"""Job records on an asyncio event loop: the API's hot paths.

A blocking client inside an async server needs a thread-pool hop per call, which costs
more than the Redis work itself: ``GET /jobs/{id}`` reads here, and ``POST /jobs`` of a
Celery task whose message is learned (CeleryBackend.filled) writes here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import redis

from taskrouter.keys import Keys

from .connection import CLIENT_OPTIONS
from .errors import engine_errors
from .store import JobStore

Pushed = Literal["sent", "unsent", "unknown"]


class AsyncRecords:
    """Build and close it on the loop that uses it (the API's lifespan)."""

    def __init__(self, url: str, keys: Keys) -> None:
        import redis.asyncio

        self.keys = keys
        # decode_responses=True: str replies, as JobStore's client.
        self._client: Any = redis.asyncio.Redis.from_url(
            url, decode_responses=True, **CLIENT_OPTIONS
        )

    async def read(self, job_id: str) -> dict[str, str] | None:
        """The record, or None; one round trip (the same HGETALL as JobStore.read)."""
        with engine_errors():
            record: dict[str, str] = await self._client.hgetall(self.keys.job(job_id))
        return record or None

    async def create_and_push(
        self, store: JobStore, create: Sequence[object], message: tuple[str, str]
    ) -> Pushed:
        """Write a record (``store.create_args``) and LPUSH its engine message in one round
        trip, the record first, as CeleryBackend does on its blocking client.

        ``sent``: both done. ``unsent``: no record was written (Redis lost its script
        cache); the message may be out, and a worker refuses it for want of a record.
        ``unknown``: the connection broke, so either may have happened. The caller
        finishes the last two with ``Runtime.submit`` (``maybe_written`` for unknown).
        """
        pipe = self._client.pipeline(transaction=False)
        store.queue_create(pipe, create, cached=True)
        pipe.lpush(*message)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            return "unknown"
        return "sent" if store.created(results) else "unsent"

    async def close(self) -> None:
        await self._client.aclose()
