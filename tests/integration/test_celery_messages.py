"""Celery messages filled from a template (backends/celery_wire.py) on a real Redis, run
by real Celery workers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from celery import signals

from taskrouter.derive import ProfileSettings
from tests.integration import app

pytestmark = pytest.mark.integration


def _normalized(raw: str) -> dict[str, Any]:
    """A message with every field that names the job or the delivery blanked."""
    message = json.loads(raw)
    body = json.loads(base64.b64decode(message.pop("body")))
    assert body[1:] == [{}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    for field in ("id", "root_id", "argsrepr"):
        message["headers"][field] = None
    for field in ("correlation_id", "delivery_tag"):
        message["properties"][field] = None
    return message


def _template_of(stack: Any, profile: str) -> Any:
    ps: ProfileSettings = stack.runtime.derived.profiles[profile]
    return stack.runtime.celery._templates.get((ps.queue, ps.soft_time_limit, ps.time_limit))


def test_the_first_message_of_a_queue_is_celerys_and_the_rest_are_filled_alike(stack):
    runtime = stack.runtime
    runtime.celery._templates.clear()  # whatever earlier tests taught this process
    # fault-celery is served only by workers that the recovery tests start: the messages
    # stay in the queue to be read.
    queue_key = f"{stack.prefix}-celery:fault-celery"
    jobs = [app.slow_once_celery.enqueue("marker", 0, "counter") for _ in range(3)]
    try:
        raw = runtime.store.client.lrange(queue_key, 0, -1)[::-1]  # oldest first
        assert len(raw) == 3
        for job, message in zip(jobs, raw, strict=True):
            decoded = json.loads(message)
            assert decoded["headers"]["id"] == decoded["headers"]["root_id"] == job.id
            assert decoded["properties"]["correlation_id"] == job.id
            assert json.loads(base64.b64decode(decoded["body"]))[0] == [job.id, 1]
            assert runtime.store.read(job.id)["state"] == "queued"
        first, *later = (_normalized(m) for m in raw)
        assert all(m == first for m in later)
        assert _template_of(stack, "fault_celery") is not None
    finally:
        runtime.store.client.delete(queue_key)
        for job in jobs:
            runtime.cancel_job(job.id)


def test_filled_messages_run_on_the_celery_worker(stack):
    jobs = [app.echo.enqueue({"n": i}) for i in range(6)]
    assert [job.wait(30) for job in jobs] == [{"n": i} for i in range(6)]
    assert _template_of(stack, "quick") is not None
    assert [job.attempts for job in jobs] == [1] * 6


def test_a_publish_signal_receiver_sees_every_message(stack):
    app.echo.enqueue("teach").wait(30)  # the queue's message is learned already
    seen: list[str] = []

    def receiver(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append((headers or {}).get("id", ""))

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        jobs = [app.echo.enqueue(i) for i in range(3)]
    finally:
        signals.before_task_publish.disconnect(receiver)
    assert seen == [job.id for job in jobs]
    assert [job.wait(30) for job in jobs] == [0, 1, 2]
