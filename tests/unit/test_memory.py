"""When taskrouter warns that Redis may evict job records: a table of INFO fields."""

from __future__ import annotations

import pytest

from taskrouter.backends.memory import eviction_warning


@pytest.mark.parametrize(
    ("maxmemory", "policy", "warns"),
    [
        (0, "noeviction", False),  # no limit: nothing is evicted
        (0, "allkeys-lru", False),  # a policy without a limit never applies
        (100 << 20, "noeviction", False),  # full means writes refused: StorageFull
        (100 << 20, "allkeys-lru", True),
        (100 << 20, "allkeys-lfu", True),
        (100 << 20, "allkeys-random", True),
        (100 << 20, "volatile-lru", True),  # every job record has a TTL
        (100 << 20, "volatile-ttl", True),
    ],
)
def test_eviction_warning(maxmemory: int, policy: str, warns: bool) -> None:
    warning = eviction_warning({"maxmemory": maxmemory, "maxmemory_policy": policy})
    assert (warning is not None) is warns
    if warning:
        assert policy in warning and "noeviction" in warning and "job records" in warning


def test_a_redis_that_does_not_say_is_not_warned_about() -> None:
    assert eviction_warning({}) is None
