"""The reconcile walk itself (reconcile.lua), on a key prefix of its own: it examines a
bounded batch per pass, goes on from its cursor, stops at young records and starts over."""

from __future__ import annotations

import time

import pytest

from taskrouter.backends.reconcile import rq_keys
from taskrouter.backends.store import JobStore, now_ms
from tests.integration.test_store import create_job

pytestmark = pytest.mark.integration
RQ_PREFIX = rq_keys("no-such-rq")  # no RQ job exists under it: every RQ job is "deleted"


def test_the_walk_is_bounded_per_pass_goes_on_from_its_cursor_and_starts_over(
    redis_url, key_prefix
):
    offset = [0]
    store = JobStore.from_url(redis_url, key_prefix, clock=lambda: now_ms() + offset[0])
    try:
        rq = [create_job(store, backend="rq", queue="q") for _ in range(5)]
        for job_id in rq:  # as RQBackend.send marks a dispatch that reached RQ
            store.client.hset(store.keys.job(job_id), "sent", 1)
        # The index orders by creation time, then by id: the Celery record must be created
        # in a later millisecond to come after the five RQ ones.
        last = now_ms()
        while now_ms() <= last:
            pass
        celery = create_job(store, backend="celery", queue="cq")
        offset[0] = 60_000  # all six are a minute old now
        young = create_job(store, backend="rq", queue="q")
        ahead = now_ms() + 60_000  # created "now" on the moved clock
        store.client.hset(store.keys.job(young), mapping={"created_at": ahead, "queued_at": ahead})
        store.client.zadd(store.keys.index_of("state", "queued"), {young: ahead})
        seen: list[list[str]] = []
        cursor, passes = "", 0
        while True:
            cursor, canceled, again, found = store.reconcile(30_000, 2, cursor, RQ_PREFIX, 100)
            seen.append(canceled)
            passes += 1
            assert again == []
            if not cursor or passes > 5:
                break
        # 2 records per pass (the 6th is the Celery one), then the young one ends the walk.
        assert [len(batch) for batch in seen] == [2, 2, 1, 0]
        assert sorted(j for batch in seen for j in batch) == sorted(rq)
        assert store.read(young)["state"] == "queued"
        cursor, canceled, _, found = store.reconcile(30_000, 10, "", RQ_PREFIX, 100)
        assert canceled == [] and found == [(celery, 1, "cq")]
        for job_id in rq:
            record = store.read(job_id)
            assert record["state"] == "canceled"
            assert "removed outside taskrouter" in record["error"]
    finally:
        store.close()


def test_a_job_waiting_in_its_dispatching_set_is_left_alone(redis_url, key_prefix):
    offset = [0]
    store = JobStore.from_url(redis_url, key_prefix, clock=lambda: now_ms() + offset[0])
    try:
        job_id = create_job(store, backend="rq", queue="q")
        store.client.zadd(store.keys.dispatching("rq"), {job_id: time.time() * 1000})
        offset[0] = 60_000
        _, canceled, again, _ = store.reconcile(30_000, 10, "", RQ_PREFIX, 100)
        assert canceled == [] and again == []
        assert store.read(job_id)["state"] == "queued"
    finally:
        store.close()


def test_an_rq_job_whose_send_never_reached_rq_is_sent_again(redis_url, key_prefix):
    offset = [0]
    store = JobStore.from_url(redis_url, key_prefix, clock=lambda: now_ms() + offset[0])
    try:
        job_id = create_job(store, backend="rq", queue="q")  # written; its send failed
        offset[0] = 60_000
        _, canceled, again, _ = store.reconcile(30_000, 10, "", RQ_PREFIX, 100)
        assert canceled == [] and again == [job_id]
        record = store.read(job_id)
        assert record["state"] == "queued" and record["dispatch"] == "2"
        assert store.client.zscore(store.keys.dispatching("rq"), job_id) is not None
    finally:
        store.close()
