"""Whether Redis may evict job records: taskrouter requires ``maxmemory-policy
noeviction`` whenever ``maxmemory`` is set (README, "Redis memory").

Under any other policy a full Redis deletes keys to make room instead of refusing the
write: ``allkeys-*`` any key (job records, indexes, RQ's jobs and queues, kombu's
messages), ``volatile-*`` any key with a TTL (every job record has one). A job whose record
is evicted reads "not found", its engine message is refused at claim, and its index
entries point at nothing until the sweep. Under ``noeviction`` a full Redis refuses
writes, which taskrouter reports as StorageFull (HTTP 503) and recovers from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import engine_errors

REQUIRED_POLICY = "noeviction"


def eviction_warning(info: Mapping[str, Any]) -> str | None:
    """A warning when the ``INFO memory`` fields of a Redis let it evict keys, else None."""
    maxmemory = int(info.get("maxmemory", 0) or 0)
    policy = str(info.get("maxmemory_policy", REQUIRED_POLICY))
    if maxmemory <= 0 or policy == REQUIRED_POLICY:
        return None
    return (
        f"Redis has maxmemory {maxmemory} bytes with maxmemory-policy {policy}: when full "
        f"it deletes keys, job records among them (jobs then read 'not found'); "
        f"taskrouter requires maxmemory-policy {REQUIRED_POLICY} "
        f"(CONFIG SET maxmemory-policy {REQUIRED_POLICY}, or in redis.conf)"
    )


def check(client: Any) -> str | None:
    """The eviction warning of the Redis behind ``client`` (INFO, which managed services
    that disable CONFIG still answer)."""
    with engine_errors():
        return eviction_warning(client.info("memory"))
