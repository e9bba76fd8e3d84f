"""The messages Celery workers hold reserved on a Redis broker, read without kombu.

kombu's Redis transport keeps each message a worker reserved (prefetched, or running
with acks_late) in a hash, delivery tag -> [message, exchange, routing key], indexed by
delivery time (epoch seconds), until the worker acknowledges it. When a worker dies,
kombu puts its messages back only after the visibility window; taskrouter gives those
jobs a new dispatch at once instead (``Runtime.requeue_held``). Read here with plain
Redis commands, so that a process which never imports kombu (the janitor, an RQ
worker) can do it. The key names are kombu 5.7's (a unit test compares them).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .base import parse_native_id
from .errors import engine_errors

if TYPE_CHECKING:
    from .runtime import Runtime

UNACKED = "unacked"  # kombu.transport.redis.Channel.unacked_key
UNACKED_INDEX = "unacked_index"  # kombu.transport.redis.Channel.unacked_index_key


def task_id(entry: str | None) -> str | None:
    """The Celery task id of an unacked entry, if it is a message of a taskrouter job
    (its body's first argument is the job id, its task id that job's native id)."""
    if entry is None:  # acked since the index was read
        return None
    try:
        headers = json.loads(entry)[0]["headers"]
    except (ValueError, TypeError, LookupError):
        return None
    nid = headers.get("id") if isinstance(headers, dict) else None
    return nid if isinstance(nid, str) and nid.split("-", 1)[0].isalnum() else None


def held_dispatches(runtime: Runtime, before: float) -> list[tuple[str, int]]:
    """(job id, dispatch) of every message Celery workers hold reserved, delivered at or
    before ``before`` (epoch seconds), on a Redis broker that is the job store's. Empty for
    any other broker (RabbitMQ gives a dead consumer's messages back by itself). An entry
    that is not a taskrouter job's is refused by requeue_held.lua, which checks the record."""
    settings = runtime.settings
    if settings.broker_url != settings.redis_url:
        return []
    prefix, client = settings.celery_key_prefix or "", runtime.store.client
    held: list[tuple[str, int]] = []
    with engine_errors("celery broker"):
        tags = client.zrangebyscore(prefix + UNACKED_INDEX, "-inf", before)
        for i in range(0, len(tags), 500):
            for entry in client.hmget(prefix + UNACKED, tags[i : i + 500]):
                nid = task_id(entry)
                if nid:
                    held.append(parse_native_id(nid))
    return held
