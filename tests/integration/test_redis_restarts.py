"""Redis restarted again and again (SIGKILL and SIGTERM, appendfsync always) under a
stream of jobs of both engines: every job ends succeeded, having run exactly once.
A smaller run of benchmarks/redis_restarts.py (whose default is 2,000 jobs)."""

from __future__ import annotations

import pytest

from benchmarks.redis_restarts import run
from tests.conftest import STACK_PREFIX

pytestmark = pytest.mark.integration


def test_every_job_succeeds_exactly_once_across_repeated_redis_restarts(tmp_path):
    # STACK_PREFIX: RQ reads its key prefix once per process (tests/conftest.py); the
    # run has a Redis server of its own, so it shares no key with the session's stack.
    outcome = run(300, 4, tmp_path, prefix=STACK_PREFIX, submit_seconds=15, drain_seconds=60)
    assert outcome.passed, "\n".join(outcome.lines())
    assert outcome.executions == {1: 300}
    assert outcome.restarts == ["SIGKILL", "SIGTERM", "SIGKILL", "SIGTERM"]
