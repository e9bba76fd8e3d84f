"""A burst of 2,000 jobs on both engines with keep_results 2 s: once their records have
expired and the janitor has run twice, Redis holds what it held before (memory and key
count within 5 %, or 1 MB of memory), and the listing matched the records throughout.
A smaller run of benchmarks/soak.py (whose default is 20,000 jobs)."""

from __future__ import annotations

import pytest

from benchmarks.soak import run
from tests.conftest import STACK_PREFIX

pytestmark = pytest.mark.integration


def test_redis_returns_to_its_baseline_after_a_burst_expires(tmp_path):
    # STACK_PREFIX: RQ reads its key prefix once per process (tests/conftest.py); the
    # run has a Redis server of its own, so it shares no key with the session's stack.
    outcome = run(2000, tmp_path, keep="2s", prefix=STACK_PREFIX, drain_seconds=120)
    report = "\n".join(outcome.lines())
    assert outcome.passed, report
    assert outcome.states == {"succeeded": 1800, "failed": 200}, report
    # The burst did grow Redis: the return is not a run that measured nothing.
    assert outcome.peak_keys > outcome.baseline.keys + 1000, report
    assert outcome.peak_memory > outcome.baseline.used_memory + 1_000_000, report
    # Nothing of the burst is left: no index entry, no registry entry, no engine key.
    assert outcome.after.patterns == outcome.baseline.patterns, report
    assert outcome.after.sizes == outcome.baseline.sizes, report
