"""Jobs changed with the engines' own tools, and messages lost in their engine: a queued
job ends in a true state within a few janitor intervals (README, "Jobs changed outside
taskrouter"). The stack's janitor interval is 250 ms, so the bound is about a second."""

from __future__ import annotations

import time
import uuid

import pytest
from rq.job import Job as RQJob
from rq.registry import FailedJobRegistry

from taskrouter.backends.base import native_id
from taskrouter.backends.rq_backend import CodecSerializer
from tests.integration import app
from tests.integration.conftest import own_worker, poll

pytestmark = pytest.mark.integration
BOUND = 10  # seconds: the rule's 3 janitor intervals are 0.75 s; the rest is slack for CI


def _counter(stack) -> str:
    return f"{stack.prefix}:t:count:{uuid.uuid4().hex}"


def _runs(stack, counter: str) -> int:
    return int(stack.runtime.store.client.get(counter) or 0)


def _rq_job(stack, nid: str) -> RQJob:
    return RQJob.fetch(nid, connection=stack.runtime.rq.connection, serializer=CodecSerializer)


def _ended(stack, job_id: str, state: str):
    record = stack.runtime.store.read(job_id)
    return record if record and record["state"] == state else None


def _unserved_rq_job(stack, tmp_path):
    """A queued RQ job on a queue no worker serves (fault-rq)."""
    job = app.slow_once_rq.enqueue(str(tmp_path / "marker"), 0, _counter(stack))
    assert job.queue == "fault-rq" and job.state == "queued"
    return job


def test_an_rq_job_deleted_outside_taskrouter_ends_canceled(stack, tmp_path):
    job = _unserved_rq_job(stack, tmp_path)
    _rq_job(stack, job.id).delete()  # what rq-dashboard's "delete" does
    deleted = time.monotonic()
    record = poll(lambda: _ended(stack, job.id, "canceled"), BOUND, "the job to end canceled")
    assert time.monotonic() - deleted < BOUND
    job.refresh()
    assert job.error == {
        "type": "Canceled",
        "message": "removed outside taskrouter (its RQ job was deleted, e.g. from rq-dashboard)",
    }
    assert record["attempts"] == "0"


def test_an_rq_job_canceled_outside_taskrouter_ends_canceled(stack, tmp_path):
    job = _unserved_rq_job(stack, tmp_path)
    _rq_job(stack, job.id).cancel()  # rq-dashboard's and RQ's own cancel
    poll(lambda: _ended(stack, job.id, "canceled"), BOUND, "the job to end canceled")
    job.refresh()
    assert job.error["type"] == "Canceled"
    assert job.error["message"] == "canceled outside taskrouter (its RQ job is canceled)"


def test_an_rq_job_in_no_queue_and_not_running_is_sent_again_and_runs_once(stack, tmp_path):
    counter = _counter(stack)
    job = app.slow_once_rq.enqueue(str(tmp_path / "marker"), 0, counter)
    rq_conn = stack.runtime.rq.connection
    queue_key = stack.runtime.rq.queue("fault-rq").key
    # As after a Redis restart that lost the queue entry but kept RQ's job hash.
    assert rq_conn.lrem(queue_key, 0, job.id) == 1
    poll(
        lambda: stack.runtime.store.fields(job.id, "dispatch")[0] == "2",
        BOUND,
        "a new dispatch",
    )
    poll(lambda: rq_conn.lpos(queue_key, native_id(job.id, 2)) is not None, BOUND, "its send")
    rq_conn.lpush(queue_key, job.id)  # the old copy turns up first after all: refused
    with own_worker(stack, "rq", ["fault-rq"]):
        assert job.wait(30) == "done"
        old = _rq_job(stack, job.id)
        poll(lambda: old.get_status(refresh=True) == "finished", 30, "the old copy")
        assert old.return_value() == "not run: stale"
    assert _runs(stack, counter) == 1
    assert job.refresh().attempts == 1


def test_an_old_failed_rq_job_requeued_from_rq_tools_runs_nothing(stack):
    counter = _counter(stack)
    job = app.flaky_rq.enqueue(counter, 1)  # fails once, then succeeds at dispatch 2
    assert job.wait(30) == 2
    first = _rq_job(stack, job.id)
    assert first.get_status() == "failed"
    registry = FailedJobRegistry(
        job.queue,
        connection=stack.runtime.rq.connection,
        serializer=CodecSerializer,
    )
    registry.requeue(job.id)  # what rq-dashboard's "requeue" does
    poll(lambda: first.get_status(refresh=True) == "finished", 30, "the requeued copy")
    assert first.return_value() == "not run: finished"
    assert _runs(stack, counter) == 2
    assert job.refresh().attempts == 2 and job.state == "succeeded"


def test_a_purged_celery_message_is_sent_again_and_runs_once(stack, tmp_path):
    counter = _counter(stack)
    job = app.slow_once_celery.enqueue(str(tmp_path / "marker"), 0, counter)
    assert job.queue == "fault-celery"
    celery = stack.runtime.celery_app
    with celery.connection_for_write() as conn:
        assert conn.default_channel.queue_purge("fault-celery") == 1  # `celery purge`
    poll(
        lambda: stack.runtime.store.fields(job.id, "dispatch")[0] == "2",
        BOUND,
        "a new dispatch",
    )
    with own_worker(stack, "celery", ["fault-celery"]):
        assert job.wait(30) == "done"
    assert _runs(stack, counter) == 1
    assert job.refresh().attempts == 1


def test_a_celery_revoke_outside_taskrouter_cancels_the_job(stack, tmp_path):
    counter = _counter(stack)
    with own_worker(stack, "celery", ["fault-celery"], concurrency=1):
        blocker = app.slow_once_celery.enqueue(str(tmp_path / "blocker"), 3, _counter(stack))
        poll(lambda: _ended(stack, blocker.id, "running"), 30, "the blocker to start")
        job = app.slow_once_celery.enqueue(str(tmp_path / "marker"), 0, counter)
        stack.runtime.celery_app.control.revoke(job.id)  # Flower's "revoke"
        assert blocker.wait(30) == "done"
        poll(lambda: _ended(stack, job.id, "canceled"), BOUND, "the job to end canceled")
    job.refresh()
    assert job.error["type"] == "Canceled"
    assert job.error["message"].startswith("revoked outside taskrouter")
    assert _runs(stack, counter) == 0
