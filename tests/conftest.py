"""Shared fixtures. Integration tests use a real Redis: a database of their own
(TASKROUTER_TEST_REDIS_DB, default 11) and a key prefix unique to this run, so parallel
runs never collide; at the end they delete only their own keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

REDIS_HOST = os.environ.get("TASKROUTER_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TASKROUTER_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("TASKROUTER_TEST_REDIS_DB", "11"))
RUN_PREFIX = f"trt-{os.getpid()}-{uuid.uuid4().hex[:6]}"
# The key prefix of the session's worker stack. RQ reads RQ_KEY_PREFIX once, at import,
# so this process uses the stack's RQ prefix from the start.
STACK_PREFIX = f"{RUN_PREFIX}-stack"
os.environ["RQ_KEY_PREFIX"] = f"{STACK_PREFIX}-rq"
for _name in [n for n in os.environ if n.startswith("TASKROUTER_")]:
    del os.environ[_name]  # tests set their own


# The job JSON of the contract: every field, only these, in this order.
CONTRACT_JOB_FIELDS = [
    "id",
    "task",
    "profile",
    "backend",
    "queue",
    "state",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "workflow_id",
]


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; fails (in CI) or skips (on a laptop) when none answers."""
    if not redis_available():
        message = f"no Redis on {REDIS_HOST}:{REDIS_PORT} (start one: see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def delete_prefix(url: str, prefix: str) -> None:
    from taskrouter.backends.store import delete_prefix as delete

    delete(url, prefix)


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"{RUN_PREFIX}-{uuid.uuid4().hex[:6]}"
    yield prefix
    delete_prefix(redis_url, prefix)
