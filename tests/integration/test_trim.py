"""The engines' own keys of expired jobs (issue 15, item 1): the janitor trims RQ's
registries in bounded batches, and a queued RQ job canceled through taskrouter expires
like a finished one instead of staying in Redis for good."""

from __future__ import annotations

import time

import pytest
import redis

from taskrouter.backends.base import native_id
from taskrouter.backends.trim import rq_registries, trim
from taskrouter.derive import engine_queues
from tests.integration import app
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def r(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url, decode_responses=True)


def test_trim_removes_registry_entries_of_expired_rq_jobs_only(stack: Stack, r: redis.Redis):
    runtime = stack.runtime
    rq_prefix = runtime.settings.rq_key_prefix
    queue = engine_queues(runtime.derived, "rq")[0]
    by_score, by_job = rq_registries(rq_prefix, [queue])
    finished, failed = by_score
    (canceled,) = by_job
    now = time.time()
    r.zadd(finished, {"gone-1": now - 10, "kept-1": now + 3600, "forever-1": float("inf")})
    r.zadd(failed, {f"gone-{i}": now - 10 - i for i in range(30)})
    r.zadd(canceled, {"canceled-gone-1": now - 5, "canceled-kept-1": now - 5})
    r.hset(f"{rq_prefix}:job:canceled-kept-1", "status", "canceled")
    planted = {"gone-1", "kept-1", "forever-1", "canceled-gone-1", "canceled-kept-1"}
    planted |= {f"gone-{i}" for i in range(30)}

    def ours(key: str) -> list[str]:
        # The session's other tests leave real jobs in this queue's registries too.
        return [m for m in r.zrange(key, 0, -1) if m in planted]

    try:
        # Batches of 10: the 32 expired entries (and any other test's) go in one pass.
        assert trim(runtime, limit=10) >= 32
        assert ours(finished) == ["kept-1", "forever-1"]
        assert ours(failed) == []
        assert ours(canceled) == ["canceled-kept-1"]
        assert trim(runtime) == 0
    finally:
        r.delete(finished, failed, canceled, f"{rq_prefix}:job:canceled-kept-1")


def test_a_canceled_queued_rq_job_expires_like_a_finished_one(stack: Stack, r: redis.Redis):
    # fault-rq: a queue no worker of the session's stack serves, so the job stays queued.
    job = app.slow_once_rq.enqueue("/nonexistent", 0.0, "unused")
    key = f"{stack.runtime.settings.rq_key_prefix}:job:{native_id(job.id, 1)}"
    assert r.exists(key) and r.ttl(key) == -1  # queued: RQ keeps it until it runs
    assert job.cancel().state == "canceled"
    keep = stack.runtime.derived.profiles["fault_rq"].keep_results
    assert r.hget(key, "status") == "canceled"
    assert 0 < r.ttl(key) <= keep
