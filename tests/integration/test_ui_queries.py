"""The dashboard's own reads on a real Redis: jobs by state and engine (exact when small,
sampled when large), listing between creation times with the cursor, and the samples of
the event counters behind the per-minute chart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from taskrouter.backends.queries import JobFilter
from taskrouter.backends.store import JobStore
from taskrouter.services.ui import queries, throughput

pytestmark = pytest.mark.integration
T0 = 1_764_000_000_000


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[JobStore]:
    s = JobStore.from_url(redis_url, key_prefix)
    yield s
    s.close()


def put(store: JobStore, n: int, state: str, *, rq_every: int = 4, start: int = T0) -> list[str]:
    """``n`` records of ``state``, one in ``rq_every`` on RQ, created 1 ms apart."""
    ids = []
    pipe = store.client.pipeline(transaction=False)
    for i in range(n):
        created = start + i
        job_id = f"{created:012x}{i:016x}"
        engine = "rq" if i % rq_every == 0 else "celery"
        record = {"id": job_id, "task": "t.q", "profile": "p", "backend": engine, "queue": "p"}
        pipe.hset(store.keys.job(job_id), mapping={**record, "state": state, "created_at": created})
        for field, value in (("all", ""), ("state", state), ("backend", engine), ("task", "t.q")):
            pipe.zadd(store.keys.index(field, value), {job_id: created})
        ids.append(job_id)
    pipe.execute()
    return ids


def test_small_states_are_split_exactly_and_large_ones_estimated(store: JobStore) -> None:
    put(store, 40, "queued")
    put(store, 5000, "succeeded", start=T0 + 1000)
    got = queries.counts(store)
    assert got.total == 5040 and got.by_engine == {"celery": 3780, "rq": 1260}
    queued, done = got.of("queued"), got.of("succeeded")
    assert queued.by_engine == {"celery": 30, "rq": 10} and not queued.estimated
    assert done.estimated and done.total == 5000
    assert abs(done.by_engine["rq"] - 1250) <= 250  # a sample of 200, one in four on RQ
    assert done.by_engine["celery"] + done.by_engine["rq"] == 5000
    assert got.of("failed").total == 0


def test_listing_between_times_pages_without_gaps(store: JobStore) -> None:
    ids = put(store, 30, "queued")  # created at T0 .. T0 + 29
    inside = ids[5:26]  # created T0 + 5 .. T0 + 25
    seen, cursor = [], None
    while True:
        page = queries.list_between(
            store, JobFilter(), since_ms=T0 + 5, until_ms=T0 + 25, limit=8, cursor=cursor
        )
        seen += [j.id for j in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(inside))
    rq_only = queries.list_between(store, JobFilter(backend="rq", task="t.q"), since_ms=T0 + 10)
    assert [j.id for j in rq_only.items] == [ids[28], ids[24], ids[20], ids[16], ids[12]]


def test_the_chart_counts_finished_jobs_between_minute_samples(store: JobStore) -> None:
    minute = 29_400_000  # an epoch minute
    counters = store.keys.counters()
    store.client.hset(counters, mapping={"succeeded|p|celery|p|t": 10, "failed|p|rq|p|t": 1})
    assert throughput.sample(store, at_ms=minute * 60_000 + 2000)
    assert not throughput.sample(store, at_ms=minute * 60_000 + 7000)  # one per minute
    store.client.hincrby(counters, "succeeded|p|celery|p|t", 5)
    store.client.hincrby(counters, "failed|p|rq|p|t", 2)
    assert throughput.sample(store, at_ms=(minute + 1) * 60_000 + 1000)
    store.client.hincrby(counters, "succeeded|p|celery|p|t", 3)
    put(store, 4, "queued", start=(minute + 1) * 60_000)
    series = throughput.series(store, at_ms=(minute + 1) * 60_000 + 30_000, minutes=3)
    assert [(m.succeeded, m.failed) for m in series] == [(None, None), (5, 2), (3, 0)]
    assert [m.submitted for m in series] == [0, 0, 4]
