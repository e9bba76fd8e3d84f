"""backends.store.JobStore against a real Redis: creation, every transition, limits and
the index sweep. No workers: each test plays the worker's and the janitor's part."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from taskrouter import codec
from taskrouter.backends.store import JobStore, new_job_id, now_ms
from taskrouter.job import Job
from taskrouter.keys import Keys
from tests.helpers import Clock, poll

pytestmark = pytest.mark.integration

LONG_LEASE = 60_000


def create_job(
    store: JobStore,
    *,
    profile: str = "p",
    task: str = "tests.store.work",
    backend: str = "celery",
    queue: str | None = None,
    max_attempts: int = 1,
    delays: list[float] | None = None,
    keep_ms: int = 3_600_000,
    idempotency_key: str | None = None,
    delay_ms: int = 0,
    unfinished_ttl_ms: int = 86_400_000,
    args: tuple[Any, ...] = ("doc-1",),
) -> str:
    """A record written the way Runtime.enqueue writes one; returns the holder's id."""
    job_id = new_job_id()
    created = now_ms()
    fields: dict[str, Any] = {
        "id": job_id,
        "task": task,
        "profile": profile,
        "backend": backend,
        "queue": queue or profile,
        "state": "scheduled" if delay_ms else "queued",
        "attempts": 0,
        "max_attempts": max_attempts,
        "dispatch": 1,
        "created_at": created,
        "queued_at": created,
        "payload": codec.encode_call(args, {}),
        "keep_ms": keep_ms,
        "delays": json.dumps(delays) if delays else None,
        "idempotency_key": idempotency_key,
        "workflow_id": None,
        "due_at": created + delay_ms if delay_ms else None,
    }
    idem = store.keys.idempotency(profile, idempotency_key) if idempotency_key else ""
    return store.create(
        store.create_args(
            job_id,
            fields,
            created_ms=created,
            unfinished_ttl_ms=unfinished_ttl_ms,
            idempotency_key=idem,
            idempotency_ttl_ms=keep_ms,
        )
    )


def token() -> str:
    return uuid.uuid4().hex


def history(attempt: int = 1) -> dict[str, Any]:
    return {"attempt": attempt, "worker": "w1", "started_at": now_ms(), "finished_at": now_ms()}


def in_index(r: redis.Redis, keys: Keys, job_id: str, field: str = "all", value: str = "") -> bool:
    return r.zscore(keys.index(field, value), job_id) is not None


# -- creation and reads ------------------------------------------------------------------


def test_create_then_read(store: JobStore, r: redis.Redis) -> None:
    job_id = create_job(store, profile="p", backend="rq", max_attempts=3, delays=[1, 2])
    record = store.read(job_id)
    assert record is not None
    assert record["id"] == job_id
    assert (record["state"], record["profile"], record["backend"], record["queue"]) == (
        "queued",
        "p",
        "rq",
        "p",
    )
    assert (record["attempts"], record["max_attempts"], record["dispatch"]) == ("0", "3", "1")
    assert json.loads(record["delays"]) == [1, 2]
    assert codec.decode_call(record["payload"]) == (("doc-1",), {})
    assert "workflow_id" not in record and "due_at" not in record  # None fields not written
    keys = store.keys
    created = float(record["created_at"])
    for field, value in [
        ("all", ""),
        ("state", "queued"),
        ("profile", "p"),
        ("backend", "rq"),
        ("task", "tests.store.work"),
    ]:
        assert r.zscore(keys.index(field, value), job_id) == created, field
    ttl = r.pttl(keys.job(job_id))
    assert 0 < ttl <= 86_400_000
    assert r.hget(keys.counters(), "submitted|p|rq|p|tests.store.work") == "1"
    assert not r.zscore(keys.schedule, job_id)
    job = Job.from_record(record)
    assert job.state == "queued" and job.to_dict()["created_at"].endswith("Z")


def test_read_of_an_unknown_id_is_none(store: JobStore) -> None:
    assert store.read(new_job_id()) is None


def test_job_ids_sort_by_creation_and_are_engine_safe() -> None:
    ids = [new_job_id() for _ in range(50)]
    assert len(set(ids)) == 50
    for job_id in ids:
        assert job_id.isalnum() and len(job_id) == 28
    first, later = new_job_id(), None
    poll(lambda: now_ms() > int(first[:12], 16), 1, "the clock to move")
    later = new_job_id()
    assert later > first


def test_create_with_an_idempotency_key_twice_returns_the_first_id(
    store: JobStore, r: redis.Redis
) -> None:
    first = create_job(store, idempotency_key="doc-1")
    second = create_job(store, idempotency_key="doc-1")
    assert second == first
    assert r.zcard(store.keys.index()) == 1  # the second record was never written
    assert r.get(store.keys.idempotency("p", "doc-1")) == first
    assert 0 < r.pttl(store.keys.idempotency("p", "doc-1")) <= 3_600_000
    # Another key, or the same key under another profile, is another job.
    assert create_job(store, idempotency_key="doc-2") != first
    assert create_job(store, profile="q", idempotency_key="doc-1") != first


def test_an_idempotency_key_whose_job_is_gone_is_taken_by_the_next(store: JobStore) -> None:
    first = create_job(store, idempotency_key="k")
    store.delete(first)
    again = create_job(store, idempotency_key="k")
    assert again != first
    assert store.read(again) is not None
    assert create_job(store, idempotency_key="k") == again


def test_delete_undoes_a_create(store: JobStore, r: redis.Redis) -> None:
    job_id = create_job(store, idempotency_key="undo")
    idem = store.keys.idempotency("p", "undo")
    store.delete(job_id, idem)
    assert store.read(job_id) is None
    assert r.get(idem) is None
    for field, value in [("all", ""), ("state", "queued"), ("profile", "p")]:
        assert not in_index(r, store.keys, job_id, field, value)
    assert r.zcard(store.keys.expiry) == 0  # nor its entry for the sweep


def test_a_delayed_job_waits_on_the_schedule(store: JobStore, r: redis.Redis) -> None:
    job_id = create_job(store, delay_ms=60_000)
    record = store.read(job_id)
    assert record is not None and record["state"] == "scheduled"
    assert r.zscore(store.keys.schedule, job_id) == float(record["due_at"])
    assert store.take_due(100, 30_000, "celery") == []
    assert store.read(job_id)["state"] == "scheduled"  # type: ignore[index]


# -- claim ---------------------------------------------------------------------------------


def test_claim_ok_marks_the_job_running(store: JobStore, r: redis.Redis) -> None:
    job_id = create_job(store, max_attempts=3, delays=[0.5, 2], args=(1, (2, 3)))
    tok = token()
    before = now_ms()
    claim = store.claim(job_id, 1, "worker-1", tok, LONG_LEASE)
    assert claim.status == "ok"
    assert claim.task == "tests.store.work"
    assert codec.decode_call(claim.payload) == ((1, (2, 3)), {})
    assert (claim.attempts, claim.max_attempts, claim.delays) == (1, 3, (0.5, 2))
    assert claim.workflow_id == ""
    record = store.read(job_id)
    assert record is not None
    assert record["state"] == "running"
    assert (record["worker"], record["token"], record["attempts"]) == ("worker-1", tok, "1")
    assert int(record["started_at"]) >= before
    lease = int(record["lease_until"])
    assert before + LONG_LEASE <= lease <= now_ms() + LONG_LEASE
    assert r.zscore(store.keys.running, job_id) == lease
    assert in_index(r, store.keys, job_id, "state", "running")
    assert not in_index(r, store.keys, job_id, "state", "queued")


def test_claim_of_the_same_dispatch_while_the_lease_lives_is_a_duplicate(
    store: JobStore,
) -> None:
    job_id = create_job(store)
    tok = token()
    assert store.claim(job_id, 1, "w1", tok, LONG_LEASE).status == "ok"
    again = store.claim(job_id, 1, "w2", token(), LONG_LEASE)
    assert again.status == "duplicate"
    record = store.read(job_id)
    assert record is not None
    assert (record["worker"], record["token"], record["attempts"]) == ("w1", tok, "1")


def test_claim_of_another_dispatch_is_stale(store: JobStore) -> None:
    job_id = create_job(store)
    stale = store.claim(job_id, 2, "w1", token(), LONG_LEASE)
    assert (stale.status, stale.detail) == ("stale", "1")
    assert store.read(job_id)["state"] == "queued"  # type: ignore[index]
    assert store.claim(job_id, "1", "w1", token(), LONG_LEASE).status == "ok"


def test_claim_of_a_finished_job_says_finished(store: JobStore) -> None:
    job_id = create_job(store)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    assert store.finish(job_id, tok, "succeeded", "1", history=history()) == ("ok", "succeeded")
    late = store.claim(job_id, 1, "w2", token(), LONG_LEASE)
    assert (late.status, late.detail) == ("finished", "succeeded")


def test_claim_of_a_missing_job_says_missing(store: JobStore) -> None:
    assert store.claim(new_job_id(), 1, "w1", token(), LONG_LEASE).status == "missing"


def test_redelivery_after_the_lease_lapsed_runs_the_next_attempt(store: JobStore) -> None:
    job_id = create_job(store, max_attempts=2)
    store.claim(job_id, 1, "dead", token(), 50)
    tok = token()
    claim = poll(
        lambda: (c := store.claim(job_id, 1, "w2", tok, LONG_LEASE)).status != "duplicate" and c,
        5,
        "the 50 ms lease to lapse",
    )
    assert (claim.status, claim.attempts) == ("ok", 2)
    assert store.read(job_id)["token"] == tok  # type: ignore[index]


def test_redelivery_after_the_lease_lapsed_with_no_attempt_left_fails(store: JobStore) -> None:
    job_id = create_job(store, max_attempts=1)
    store.claim(job_id, 1, "dead", token(), 50)
    claim = poll(
        lambda: (
            (c := store.claim(job_id, 1, "w2", token(), LONG_LEASE)).status != "duplicate" and c
        ),
        5,
        "the 50 ms lease to lapse",
    )
    assert (claim.status, claim.detail) == ("finished", "failed")
    job = Job.from_record(store.read(job_id))  # type: ignore[arg-type]
    assert job.state == "failed"
    assert job.error is not None and job.error["type"] == "WorkerLost"


# -- finish ------------------------------------------------------------------------------


def test_finish_succeeded_stores_the_result_and_expires_the_record(
    store: JobStore, r: redis.Redis
) -> None:
    job_id = create_job(store, keep_ms=120_000)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    entry = history()
    result = codec.dumps({"pair": (1, 2)})
    assert store.finish(job_id, tok, "succeeded", result, history=entry) == ("ok", "succeeded")
    job = Job.from_record(store.read(job_id))  # type: ignore[arg-type]
    assert job.state == "succeeded" and job.finished
    assert job.result == {"pair": (1, 2)}
    assert job.history == [entry]
    assert job.finished_at is not None and job.started_at is not None
    assert job.finished_at >= job.started_at
    assert 0 < r.pttl(store.keys.job(job_id)) <= 120_000
    assert r.zscore(store.keys.running, job_id) is None
    assert in_index(r, store.keys, job_id, "state", "succeeded")
    assert not in_index(r, store.keys, job_id, "state", "running")
    assert r.hget(store.keys.job(job_id), "token") is None
    expiry = r.zrange(store.keys.expiry, 0, -1)
    assert expiry == [f"{job_id}|p|celery|succeeded|tests.store.work"]
    # The same attempt cannot finish twice.
    assert store.finish(job_id, tok, "failed", "{}", history=entry) == ("lost", "succeeded")


def test_finish_failed_stores_the_error(store: JobStore) -> None:
    job_id = create_job(store)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    error = json.dumps({"type": "ValueError", "message": "bad"})
    assert store.finish(job_id, tok, "failed", error, history=history()) == ("ok", "failed")
    job = Job.from_record(store.read(job_id))  # type: ignore[arg-type]
    assert job.state == "failed"
    assert job.to_dict()["error"] == {"type": "ValueError", "message": "bad"}


def test_finish_with_a_wrong_token_is_lost_and_changes_nothing(store: JobStore) -> None:
    job_id = create_job(store)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    before = store.read(job_id)
    assert store.finish(job_id, "not-the-token", "succeeded", "1", history=history()) == (
        "lost",
        "running",
    )
    assert store.read(job_id) == before
    assert store.finish(new_job_id(), tok, "succeeded", "1", history=history()) == (
        "lost",
        "missing",
    )


def test_retry_goes_to_the_schedule_and_take_due_returns_it_when_due(
    store: JobStore, r: redis.Redis
) -> None:
    job_id = create_job(store, max_attempts=2, backend="rq", queue="slow")
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    due = now_ms() + 1500
    error = json.dumps({"type": "IOError", "message": "flaky"})
    assert store.finish(job_id, tok, "retry", error, due_ms=due, history=history()) == (
        "ok",
        "retrying",
    )
    record = store.read(job_id)
    assert record is not None
    assert (record["state"], record["dispatch"], record["due_at"]) == ("retrying", "2", str(due))
    assert json.loads(record["error"])["type"] == "IOError"
    assert r.zscore(store.keys.schedule, job_id) == due
    assert in_index(r, store.keys, job_id, "state", "retrying")
    # Not before it is due.
    assert store.take_due(100, 30_000, "rq") == []
    assert now_ms() < due, "the machine is too slow for this check"
    assert store.read(job_id)["state"] == "retrying"  # type: ignore[index]
    # When due: back to queued, to be sent as dispatch 2.
    taken = poll(lambda: store.take_due(100, 30_000, "rq"), 10, "the retry to fall due")
    assert now_ms() >= due
    assert taken == [(job_id, "rq", "slow", "2", "p")]
    record = store.read(job_id)
    assert record is not None
    assert record["state"] == "queued" and "due_at" not in record
    assert int(record["queued_at"]) >= due
    assert r.zscore(store.keys.schedule, job_id) is None
    assert r.zscore(store.keys.dispatching("rq"), job_id) is not None
    # The first dispatch's message is stale now; the second one runs attempt 2.
    assert store.claim(job_id, 1, "w1", token(), LONG_LEASE).status == "stale"
    claim = store.claim(job_id, 2, "w2", token(), LONG_LEASE)
    assert (claim.status, claim.attempts) == ("ok", 2)
    assert r.zscore(store.keys.dispatching("rq"), job_id) is None


def test_a_dispatch_that_never_reached_its_engine_is_sent_again(store: JobStore) -> None:
    job_id = create_job(store, delay_ms=1)
    assert poll(lambda: store.take_due(100, 50, "celery"), 5, "the delayed job") == [
        (job_id, "celery", "p", "1", "p")
    ]
    # No engine confirmed it: after the grace it is handed out again.
    again = poll(lambda: store.take_due(100, 50, "celery"), 5, "the grace to pass")
    assert again == [(job_id, "celery", "p", "1", "p")]
    store.dispatched(job_id, "celery")
    assert store.take_due(100, 0, "celery") == []


def test_take_due_hands_out_its_engines_jobs_and_readies_the_others_for_theirs(
    store: JobStore, r: redis.Redis
) -> None:
    celery_job = create_job(store, backend="celery", delay_ms=1)
    rq_job = create_job(store, backend="rq", queue="slow", delay_ms=1)
    due = max(int(store.read(j)["due_at"]) for j in (celery_job, rq_job))  # type: ignore[index]
    poll(lambda: now_ms() > due, 5, "both jobs to fall due")
    assert store.take_due(100, 30_000, "celery") == [(celery_job, "celery", "p", "1", "p")]
    # The RQ job left the schedule as well: queued, and due at once in RQ's own set.
    assert store.read(rq_job)["state"] == "queued"  # type: ignore[index]
    assert r.zscore(store.keys.schedule, rq_job) is None
    assert r.zscore(store.keys.dispatching("rq"), rq_job) <= now_ms()  # type: ignore[operator]
    assert r.zscore(store.keys.dispatching("celery"), rq_job) is None
    assert store.take_due(100, 30_000, "celery") == []
    assert store.take_due(100, 30_000, "rq") == [(rq_job, "rq", "slow", "1", "p")]
    # Cancel takes a job out of its engine's set.
    store.cancel(rq_job)
    assert r.zscore(store.keys.dispatching("rq"), rq_job) is None


def test_take_due_moves_the_one_dispatching_set_of_older_versions_into_the_engines_sets(
    store: JobStore, r: redis.Redis
) -> None:
    legacy = store.keys.legacy_dispatching
    assert legacy == f"{store.keys.prefix}:dispatching"  # the name older versions wrote
    celery_job, rq_job = create_job(store, backend="celery"), create_job(store, backend="rq")
    expired = new_job_id()  # a record that is gone
    r.zadd(legacy, {celery_job: now_ms() + 60_000, rq_job: 0, expired: 0})
    assert [t[0] for t in store.take_due(100, 30_000, "celery")] == [celery_job]  # due now
    assert r.exists(legacy) == 0
    assert [t[0] for t in store.take_due(100, 30_000, "rq")] == [rq_job]
    for engine in ("celery", "rq"):
        assert r.zscore(store.keys.dispatching(engine), expired) is None


def test_renew_extends_only_the_leases_still_owned(store: JobStore, r: redis.Redis) -> None:
    mine, theirs = create_job(store), create_job(store)
    tok = token()
    store.claim(mine, 1, "w1", tok, 1_000)
    store.claim(theirs, 1, "w2", token(), 1_000)
    lost = store.renew({mine: tok, theirs: "wrong"}, LONG_LEASE)
    assert lost == [theirs]
    assert int(store.read(mine)["lease_until"]) > now_ms() + 30_000  # type: ignore[index]
    assert r.zscore(store.keys.running, mine) > now_ms() + 30_000  # type: ignore[operator]
    assert store.renew({}, LONG_LEASE) == []


# -- cancel ------------------------------------------------------------------------------


def test_cancel_of_a_queued_job(store: JobStore, r: redis.Redis) -> None:
    job_id = create_job(store, keep_ms=60_000)
    assert store.cancel(job_id) == ("ok", "queued", "celery", 1)
    job = Job.from_record(store.read(job_id))  # type: ignore[arg-type]
    assert job.state == "canceled" and job.finished_at is not None
    assert job.error == {"type": "Canceled", "message": "canceled while queued"}
    assert in_index(r, store.keys, job_id, "state", "canceled")
    assert not in_index(r, store.keys, job_id, "state", "queued")
    assert 0 < r.pttl(store.keys.job(job_id)) <= 60_000
    assert store.claim(job_id, 1, "w1", token(), LONG_LEASE).status == "finished"


def test_cancel_of_a_running_job_drops_its_late_outcome(store: JobStore, r: redis.Redis) -> None:
    job_id = create_job(store)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    assert store.cancel(job_id) == ("ok", "running", "celery", 1)
    assert r.zscore(store.keys.running, job_id) is None
    assert store.finish(job_id, tok, "succeeded", "1", history=history()) == ("lost", "canceled")
    assert store.renew({job_id: tok}, LONG_LEASE) == [job_id]
    record = store.read(job_id)
    assert record is not None and record["state"] == "canceled" and "result" not in record


def test_cancel_of_a_scheduled_or_retrying_job_takes_it_off_the_schedule(
    store: JobStore, r: redis.Redis
) -> None:
    delayed = create_job(store, delay_ms=60_000)
    assert store.cancel(delayed)[:2] == ("ok", "scheduled")
    assert r.zscore(store.keys.schedule, delayed) is None
    retrying = create_job(store, max_attempts=2)
    tok = token()
    store.claim(retrying, 1, "w1", tok, LONG_LEASE)
    store.finish(retrying, tok, "retry", "{}", due_ms=now_ms(), history=history())
    assert store.cancel(retrying) == ("ok", "retrying", "celery", 2)
    assert store.take_due(100, 30_000, "celery") == []


def test_cancel_of_a_finished_or_missing_job(store: JobStore) -> None:
    job_id = create_job(store)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    store.finish(job_id, tok, "succeeded", "1", history=history())
    assert store.cancel(job_id) == ("finished", "succeeded", "", 0)
    assert store.read(job_id)["state"] == "succeeded"  # type: ignore[index]
    canceled = create_job(store)
    store.cancel(canceled)
    assert store.cancel(canceled) == ("finished", "canceled", "", 0)
    assert store.cancel(new_job_id()) == ("missing", "", "", 0)


# -- reap ------------------------------------------------------------------------------


def test_reap_retries_a_job_whose_lease_lapsed_when_attempts_remain(
    store: JobStore, r: redis.Redis
) -> None:
    job_id = create_job(store, max_attempts=2)
    tok = token()
    store.claim(job_id, 1, "dead-worker", tok, 50)
    reaped = poll(store.reap, 5, "the lease to lapse")
    assert reaped == [(job_id, "retrying")]
    job = Job.from_record(store.read(job_id))  # type: ignore[arg-type]
    assert job.state == "retrying"
    assert job.error is not None and job.error["type"] == "WorkerLost"
    assert "dead-worker" in job.error["message"]
    assert [h["attempt"] for h in job.history] == [1]
    assert job.history[0]["error"]["type"] == "WorkerLost"
    assert store.read(job_id)["dispatch"] == "2"  # type: ignore[index]
    assert r.zscore(store.keys.schedule, job_id) is not None
    assert r.zscore(store.keys.running, job_id) is None
    # The dead worker's late outcome is dropped; reaping again finds nothing.
    assert store.finish(job_id, tok, "succeeded", "1", history=history())[0] == "lost"
    assert store.reap() == []
    assert [t[0] for t in store.take_due(100, 30_000, "celery")] == [job_id]


def test_reap_fails_a_job_with_worker_lost_when_no_attempt_remains(
    store: JobStore, r: redis.Redis
) -> None:
    job_id = create_job(store, max_attempts=1)
    store.claim(job_id, 1, "dead-worker", token(), 50)
    assert poll(store.reap, 5, "the lease to lapse") == [(job_id, "failed")]
    job = Job.from_record(store.read(job_id))  # type: ignore[arg-type]
    assert job.state == "failed" and job.finished_at is not None
    assert job.error is not None and job.error["type"] == "WorkerLost"
    assert in_index(r, store.keys, job_id, "state", "failed")
    assert r.zscore(store.keys.schedule, job_id) is None


def test_reap_leaves_live_leases_alone(store: JobStore) -> None:
    job_id = create_job(store)
    store.claim(job_id, 1, "w1", token(), LONG_LEASE)
    assert store.reap() == []
    assert store.read(job_id)["state"] == "running"  # type: ignore[index]


# -- global limits ------------------------------------------------------------------------


def test_concurrency_limit_sends_the_second_claim_back_to_the_schedule(
    store: JobStore, r: redis.Redis
) -> None:
    store.publish_limits({"capped": (1, None, None)})
    assert r.hgetall(store.keys.limits("capped")) == {"concurrency": "1"}
    first, second = create_job(store, profile="capped"), create_job(store, profile="capped")
    tok = token()
    assert store.claim(first, 1, "w1", tok, LONG_LEASE).status == "ok"
    before = now_ms()
    limited = store.claim(second, 1, "w2", token(), LONG_LEASE)
    assert limited.status == "limited"
    wait = int(limited.detail)
    assert before < wait <= now_ms() + 1_000
    record = store.read(second)
    assert record is not None
    assert (record["state"], record["dispatch"], record["waiting"]) == ("scheduled", "2", "limit")
    assert r.zscore(store.keys.schedule, second) == wait
    assert in_index(r, store.keys, second, "state", "scheduled")
    assert r.zrange(store.keys.slots("capped"), 0, -1) == [first]
    # While the first still runs, the schedule keeps the second back even when it is due.
    poll(lambda: now_ms() > wait, 5, "the limited job to fall due")
    assert store.take_due(100, 30_000, "celery") == []
    assert r.zscore(store.keys.schedule, second) > wait  # type: ignore[operator]
    assert store.read(second)["state"] == "scheduled"  # type: ignore[index]
    store.finish(first, tok, "succeeded", "1", history=history())
    assert r.zcard(store.keys.slots("capped")) == 0
    taken = poll(lambda: store.take_due(100, 30_000, "celery"), 5, "the second job to be sent")
    assert taken == [(second, "celery", "capped", "2", "capped")]
    claim = store.claim(second, 2, "w2", token(), LONG_LEASE)
    assert (claim.status, claim.attempts) == ("ok", 1)
    assert "waiting" not in store.read(second)  # type: ignore[operator]


def test_a_dead_workers_slot_is_given_back(store: JobStore) -> None:
    store.publish_limits({"capped": (1, None, None)})
    first, second = create_job(store, profile="capped"), create_job(store, profile="capped")
    store.claim(first, 1, "dead", token(), 200)
    assert store.claim(second, 1, "w2", token(), LONG_LEASE).status == "limited"
    # The dead worker's slot lapses with its lease: the second job may start then.
    taken = poll(
        lambda: store.take_due(100, 30_000, "celery"), 5, "the dead worker's slot to lapse"
    )
    assert [t[0] for t in taken] == [second]
    claim = store.claim(second, 2, "w2", token(), LONG_LEASE)
    assert (claim.status, claim.attempts) == ("ok", 1)


def test_rate_limit_defers_the_third_start_in_a_window(store: JobStore, r: redis.Redis) -> None:
    store.publish_limits({"rated": (None, 2, 60.0)})
    assert r.hgetall(store.keys.limits("rated")) == {"rate_count": "2", "rate_per_ms": "60000"}
    jobs = [create_job(store, profile="rated") for _ in range(3)]
    started = now_ms()
    tokens = [token() for _ in jobs]
    assert store.claim(jobs[0], 1, "w", tokens[0], LONG_LEASE).status == "ok"
    assert store.claim(jobs[1], 1, "w", tokens[1], LONG_LEASE).status == "ok"
    # Finishing does not give a start back: the window counts starts.
    store.finish(jobs[0], tokens[0], "succeeded", "1", history=history())
    third = store.claim(jobs[2], 1, "w", token(), LONG_LEASE)
    assert third.status == "limited"
    assert started + 60_000 <= int(third.detail) <= now_ms() + 60_000
    assert store.read(jobs[2])["state"] == "scheduled"  # type: ignore[index]
    assert store.take_due(100, 30_000, "celery") == []
    # The window's key goes with the window: a profile no longer used leaves nothing.
    # The window's log goes a second after its newest entry is out of the window.
    assert 0 < r.pttl(store.keys.rate("rated")) <= 61_000


def test_limits_of_other_profiles_do_not_apply(store: JobStore) -> None:
    store.publish_limits({"capped": (1, None, None), "free": (None, None, None)})
    free = [create_job(store, profile="free") for _ in range(3)]
    for job_id in free:
        assert store.claim(job_id, 1, "w", token(), LONG_LEASE).status == "ok"


def test_publishing_no_limits_removes_the_entry(store: JobStore, r: redis.Redis) -> None:
    store.publish_limits({"capped": (3, 10, 1.5)})
    assert r.hgetall(store.keys.limits("capped")) == {
        "concurrency": "3",
        "rate_count": "10",
        "rate_per_ms": "1500",
    }
    store.publish_limits({"capped": (None, None, None)})
    assert r.exists(store.keys.limits("capped")) == 0


# -- sweep -------------------------------------------------------------------------------


def test_sweep_removes_the_index_entries_of_an_expired_record(
    store: JobStore, r: redis.Redis
) -> None:
    short = create_job(store, keep_ms=50, profile="swept", backend="rq", task="tests.store.gone")
    kept = create_job(store, keep_ms=3_600_000, profile="swept", backend="rq")
    for job_id in (short, kept):
        tok = token()
        store.claim(job_id, 1, "w1", tok, LONG_LEASE)
        store.finish(job_id, tok, "succeeded", "1", history=history())
    indexes = [
        ("all", ""),
        ("state", "succeeded"),
        ("profile", "swept"),
        ("backend", "rq"),
        ("task", "tests.store.gone"),
    ]
    assert all(in_index(r, store.keys, short, f, v) for f, v in indexes)
    poll(lambda: store.read(short) is None, 5, "the record to expire")
    swept = poll(store.sweep, 5, "the sweep to find the expired record")
    assert swept == 1
    for field, value in indexes:
        assert not in_index(r, store.keys, short, field, value), field
    assert all(m.split("|")[0] != short for m in r.zrange(store.keys.expiry, 0, -1))
    # The record that lives on keeps its entries.
    assert in_index(r, store.keys, kept, "state", "succeeded")
    assert in_index(r, store.keys, kept)
    assert store.sweep() == 0


def test_a_sweep_that_comes_before_the_record_expires_keeps_its_entry(
    store: JobStore, r: redis.Redis, clock: Clock
) -> None:
    # The expiry entry's score is the client's clock at the finish, the TTL the server's:
    # a sweep in between must not drop the entry, or the job stays in every index.
    job_id = create_job(store, keep_ms=60_000)
    tok = token()
    store.claim(job_id, 1, "w1", tok, LONG_LEASE)
    store.finish(job_id, tok, "succeeded", "1", history=history())
    clock.advance(120)  # the entry is due; the record lives on (the server's TTL)
    assert store.sweep() == 0
    member = next(m for m in r.zrange(store.keys.expiry, 0, -1) if m.startswith(job_id))
    assert r.zscore(store.keys.expiry, member) > clock() - 120_000 + 50_000
    r.delete(store.keys.job(job_id))  # now it has expired
    clock.advance(120)
    assert store.sweep() == 1
    assert not in_index(r, store.keys, job_id)
    assert not in_index(r, store.keys, job_id, "state", "succeeded")
    assert r.zcard(store.keys.expiry) == 0


def test_a_sweep_clears_more_expired_jobs_than_one_batch_in_short_calls(
    store: JobStore, r: redis.Redis
) -> None:
    ids = [create_job(store, unfinished_ttl_ms=1) for _ in range(25)]
    poll(lambda: not any(r.exists(store.keys.job(i)) for i in ids), 5, "the records to expire")
    # Batches of 10: three calls in one pass; a pass of one batch leaves the rest.
    assert store.sweep(limit=10, batches=1) == 10
    assert store.sweep(limit=10) == 15
    assert r.zcard(store.keys.index()) == 0
    assert r.zcard(store.keys.index("state", "queued")) == 0
    assert r.zcard(store.keys.expiry) == 0


def test_a_sweep_drops_planted_expiry_entries_and_touches_nothing_else(
    store: JobStore, r: redis.Redis
) -> None:
    kept = create_job(store)
    planted = ["no-pipes-at-all", "|||", "x|p|celery|succeeded|t|extra|fields", "\xff|\x00"]
    r.zadd(store.keys.expiry, dict.fromkeys(planted, 1))
    assert store.sweep() == 1  # the one that parses names a job without a record
    assert not set(r.zrange(store.keys.expiry, 0, -1)) & set(planted)
    assert in_index(r, store.keys, kept) and store.read(kept) is not None


def test_sweep_removes_the_index_entries_of_an_unfinished_record_that_expired(
    store: JobStore, r: redis.Redis
) -> None:
    job_id = create_job(store, unfinished_ttl_ms=50)
    poll(lambda: store.read(job_id) is None, 5, "the record to expire")

    def swept() -> bool:
        store.sweep()
        return not in_index(r, store.keys, job_id)

    poll(swept, 2, "the sweep to clear its index entries")
    assert not in_index(r, store.keys, job_id, "state", "queued")


def test_a_celery_job_queued_past_the_window_gets_a_new_dispatch(
    store: JobStore, clock: Clock
) -> None:
    old = create_job(store, backend="celery")
    rq_job = create_job(store, backend="rq")
    fresh_window = 3600.0
    assert store.requeue_stale(fresh_window) == []  # younger than the window: untouched
    clock.advance(0.05)  # the store's clock: the job is older now, with no sleep
    assert store.requeue_stale(0.01) == [old]  # RQ keeps its own in-flight list: not needed
    assert store.requeue_stale(0.01) == []  # once per window, not on every pass
    sent = store.take_due(10, grace_ms=30_000, engine="celery")
    assert [(s[0], s[3]) for s in sent] == [(old, "2")]
    # The lost (or late) first message is refused; the new dispatch runs.
    assert store.claim(old, 1, "w", token(), 5_000).status == "stale"
    assert store.claim(old, 2, "w", token(), 5_000).status == "ok"
    assert store.read(rq_job)["dispatch"] == "1"
