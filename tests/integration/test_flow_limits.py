"""Keyed limits, weighted rates and fair share on real workers of both engines."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import defaultdict

import pytest

from taskrouter.errors import JobStateConflict
from tests.helpers import max_overlap
from tests.integration import flow_app
from tests.integration.conftest import Stack, own_worker, poll

pytestmark = pytest.mark.integration


def _spans(stack: Stack, key: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for item in stack.runtime.store.client.lrange(key, 0, -1):
        label, start, end = item.rsplit(":", 2)
        out[label].append((float(start), float(end)))
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "engine, fn, queue, workers, per_key, cap",
    [
        ("celery", flow_app.keyed, "flow-keyed", 2, 2, 4),
        ("rq", flow_app.keyed_rq, "flow-keyed-rq", 2, 1, 3),
    ],
)
def test_per_key_caps_hold_across_two_workers_under_the_global_cap(
    stack, engine, fn, queue, workers, per_key, cap
):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    tenants = ["t1", "t2", "t3"]
    with contextlib.ExitStack() as running:
        for n in range(workers):
            running.enter_context(own_worker(stack, engine, [queue], concurrency=3, tag=str(n)))
        jobs = [fn.enqueue(key, t, 0.5) for _ in range(4) for t in tenants]
        for job in jobs:
            job.wait(60)
    spans = _spans(stack, key)
    assert sorted(spans) == tenants and all(len(s) == 4 for s in spans.values())
    for tenant in tenants:
        assert max_overlap(spans[tenant]) == per_key, tenant  # never more, and reached
    everything = [s for v in spans.values() for s in v]
    assert max_overlap(everything) <= cap
    assert max_overlap(everything) > per_key  # tenants ran side by side
    assert all(job.attempts == 1 for job in jobs)  # waiting used no attempt


def test_a_per_key_rate_spaces_one_key_and_not_the_others(stack):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    with own_worker(stack, "celery", ["flow-keyed"], concurrency=3):
        jobs = [flow_app.key_rated.enqueue(key, t) for t in ("a", "b") for _ in range(4)]
        for job in jobs:
            job.wait(60)
    spans = _spans(stack, key)
    for tenant in ("a", "b"):
        starts = [s for s, _ in spans[tenant]]
        # 2 per 2 s for each key: the 3rd start of a key comes a window after its 1st
        assert min(starts[i + 2] - starts[i] for i in range(len(starts) - 2)) >= 1.95
    # ...while the other key was not held back: both keys' first two starts came at once
    firsts = sorted(s for t in ("a", "b") for s, _ in spans[t][:2])
    assert firsts[-1] - firsts[0] < 1.5


def test_a_weighted_rate_counts_the_units_each_call_declares(stack):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    with own_worker(stack, "celery", ["flow-keyed"], concurrency=3):
        # rate_limit 3000/2s; calls of 1000 units: 3 per window, not 3000
        jobs = [flow_app.weighted.using(cost=1000).enqueue(key, "k") for _ in range(6)]
        for job in jobs:
            job.wait(60)
        big = flow_app.weighted.using(cost=5000).enqueue(key, "big")  # more than a window
        big.wait(60)
    spans = _spans(stack, key)
    starts = [s for s, _ in spans["k"]]
    assert len(starts) == 6
    assert min(starts[i + 3] - starts[i] for i in range(3)) >= 1.95
    assert starts[2] - starts[0] < 1.5  # the first three fit in one window
    # The big call started alone, once the window had emptied.
    assert spans["big"][0][0] - starts[-1] >= 1.95


def test_fair_share_one_tenants_job_starts_within_a_slot_time_behind_a_burst(stack):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    slot = 1.0  # seconds each job holds one of the profile's 2 slots
    with own_worker(stack, "celery", ["flow-fair"], concurrency=4):
        burst = [flow_app.fair.enqueue(key, "A", slot) for _ in range(1000)]
        store = stack.runtime.store
        line = store.keys.waiting("fair", "A")
        poll(lambda: store.client.zcard(line) >= 990, 120, "tenant A's burst to wait in line")
        asked = time.time()
        lone = flow_app.fair.enqueue(key, "B", slot)
        lone.wait(30)
        waited = lone.started_at / 1000 - asked
        for job in burst:  # the rest of the burst is not this test's business
            with contextlib.suppress(JobStateConflict):
                job.cancel()
    # B started at the next free slot: within one slot-time (and the schedule's 0.5 s
    # pass), not after A's 1,000 jobs (500 slot-times).
    assert waited < slot + 0.6, waited
    assert len(_spans(stack, key)["A"]) < 20


def test_weighted_fair_share_gives_a_key_its_weight_in_starts_per_round(stack):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    store = stack.runtime.store
    with own_worker(stack, "celery", ["flow-fair"], concurrency=3):
        blocker = flow_app.fair_weighted.enqueue(key, "first", 1.0)  # holds the one slot
        poll(lambda: blocker.refresh().state == "running", 30, "the first job to start")
        jobs = [flow_app.fair_weighted.enqueue(key, t, 0.05) for t in ("gold", "free") * 8]
        lines = (
            store.keys.waiting("fair_weighted", "gold"),
            store.keys.waiting("fair_weighted", "free"),
        )
        poll(lambda: all(store.client.zcard(k) == 8 for k in lines), 30, "both lines")
        for job in jobs:
            job.wait(60)
    spans = _spans(stack, key)
    order = sorted((s, t) for t in ("gold", "free") for s, _ in spans[t])
    tenants = "".join("g" if t == "gold" else "f" for _, t in order)
    # gold has weight 3: three starts in a row for each one of free's, while both wait
    assert tenants[:8] in ("gggfgggf", "fgggfggg"), tenants
