"""Messages planted straight into the engines' queues never execute anything."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from rq import Queue
from rq.serializers import PickleSerializer

from taskrouter.backends.celery_app import EXECUTE
from taskrouter.backends.rq_backend import CodecSerializer
from taskrouter.backends.store import new_job_id, now_ms
from tests.integration.conftest import own_worker, poll

pytestmark = pytest.mark.integration


def _queued_record(stack) -> str:
    """A job record in state queued whose only engine message is the one the test plants."""
    store = stack.runtime.store
    job_id = new_job_id()
    fields = {
        "id": job_id,
        "task": "t.touch",
        "profile": "fault_rq",
        "backend": "rq",
        "queue": "fault-rq",
        "state": "queued",
        "attempts": 0,
        "max_attempts": 1,
        "dispatch": 1,
        "created_at": now_ms(),
        "payload": '{"a":["/nonexistent"],"k":{}}',
        "keep_ms": 60_000,
    }
    store.create(store.create_args(job_id, fields, created_ms=now_ms(), unfinished_ttl_ms=60_000))
    return job_id


def _drained(stack, key: str) -> bool:
    return stack.runtime.rq.connection.llen(key) == 0


def _celery_queue(stack, name: str) -> str:
    """The Redis list behind a Celery queue (kombu's global key prefix applies)."""
    return (stack.runtime.settings.celery_key_prefix or "") + name


def test_rq_job_naming_another_function_is_refused(stack, tmp_path: Path):
    target = tmp_path / "made-by-planted-job"
    with own_worker(stack, "rq", ["fault-rq"]):
        q = Queue("fault-rq", connection=stack.runtime.rq.connection, serializer=CodecSerializer)
        planted = q.enqueue("os.mkdir", str(target))
        poll(
            lambda: planted.get_status(refresh=True) in ("failed", "finished"),
            30,
            "the planted job to be handled",
        )
        assert planted.get_status() == "failed"
    assert not target.exists()


def test_rq_job_with_a_pickle_payload_is_refused(stack, tmp_path: Path):
    target = tmp_path / "made-by-pickle"
    with own_worker(stack, "rq", ["fault-rq"]):
        q = Queue("fault-rq", connection=stack.runtime.rq.connection, serializer=PickleSerializer)
        q.enqueue(os.mkdir, str(target))
        poll(lambda: _drained(stack, q.key), 30, "the worker to take the planted job")
        # The worker fails it while decoding; give it the time one job takes, then check
        # by running a real job after it on the same worker.
        from tests.integration import app

        counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
        assert app.slow_once_rq.enqueue(str(tmp_path / "m"), 0, counter).wait(30) == "done"
    assert not target.exists()


def test_celery_message_with_pickle_payload_is_refused(stack, tmp_path: Path):
    job_id = _queued_record(stack)
    with own_worker(stack, "celery", ["fault-celery"]):
        stack.runtime.celery_app.send_task(
            EXECUTE, args=(job_id, 1), queue="fault-celery", serializer="pickle"
        )
        poll(
            lambda: _drained(stack, _celery_queue(stack, "fault-celery")),
            30,
            "the worker to take the message",
        )
        # A real job behind it proves the worker went past the planted one.
        from tests.integration import app

        counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
        assert app.slow_once_celery.enqueue(str(tmp_path / "m"), 0, counter).wait(30) == "done"
    assert stack.runtime.store.read(job_id)["state"] == "queued"  # never claimed


def test_celery_message_naming_an_unregistered_task_is_refused(stack, tmp_path: Path):
    target = tmp_path / "made-by-unregistered"
    with own_worker(stack, "celery", ["fault-celery"]):
        stack.runtime.celery_app.send_task("os.mkdir", args=(str(target),), queue="fault-celery")
        poll(
            lambda: _drained(stack, _celery_queue(stack, "fault-celery")),
            30,
            "the worker to take the message",
        )
        from tests.integration import app

        counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
        assert app.slow_once_celery.enqueue(str(tmp_path / "m"), 0, counter).wait(30) == "done"
    assert not target.exists()


def test_engine_message_for_a_job_with_no_record_runs_nothing(stack, tmp_path: Path):
    ENTRY = "taskrouter.backends.rq_backend.rq_entry"

    with own_worker(stack, "rq", ["fault-rq"]):
        q = Queue("fault-rq", connection=stack.runtime.rq.connection, serializer=CodecSerializer)
        planted = q.enqueue(ENTRY, "f" * 28, 1)
        poll(lambda: planted.get_status(refresh=True) == "finished", 30, "the planted job")
        assert planted.return_value() == "not run: missing"
