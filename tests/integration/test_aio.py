"""The API's event-loop write (backends/aio.py): a Celery job's record and message in one
round trip, and how Runtime.submit finishes one whose outcome is not known."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from taskrouter.backends.aio import AsyncRecords, Pushed
from taskrouter.registry import CallOptions
from tests.integration import app
from tests.integration.conftest import poll

pytestmark = pytest.mark.integration


def _push(stack: Any, planned: Any) -> Pushed:
    runtime = stack.runtime
    message = runtime.fast_message(planned)
    assert message is not None, "no learned message for the quick queue"

    async def go() -> Pushed:
        records = AsyncRecords(stack.redis_url, runtime.store.keys)
        try:
            return await records.create_and_push(runtime.store, planned.create, message)
        finally:
            await records.close()

    return asyncio.run(go())


def _submitted(stack: Any) -> int:
    """How many t.touch jobs the counters say were submitted (a re-created record
    would count twice)."""
    counters = stack.runtime.store.client.hgetall(stack.runtime.store.keys.counters())
    return int(counters.get("submitted|quick|celery|quick|t.touch", 0))


@pytest.fixture
def learned(stack: Any) -> None:
    for _ in range(2):  # the first waits for kombu's connection; the second teaches
        app.echo.enqueue("teach").wait(30)


def _touch_job(stack: Any, path: Path) -> Any:
    return stack.runtime.plan(app.touch, (str(path),), {}, CallOptions())


def _runs(stack: Any, path: Path, job_id: str) -> int:
    """Executions of a t.touch job, once it succeeded and its queue is drained (a second
    copy of its message, if any, has been taken and refused)."""
    job = stack.runtime.get_job(job_id)
    job.wait(30)
    queue = f"{stack.prefix}-celery:quick"
    poll(lambda: stack.runtime.store.client.llen(queue) == 0, 30, "the quick queue to drain")
    return len(path.read_text().splitlines())


def test_a_job_written_and_pushed_on_the_loop_runs_once(stack, learned, tmp_path):
    before = _submitted(stack)
    planned = _touch_job(stack, tmp_path / "ran")
    assert _push(stack, planned) == "sent"
    assert _runs(stack, tmp_path / "ran", planned.job_id) == 1
    assert _submitted(stack) == before + 1


def test_an_unknown_outcome_that_did_land_is_sent_again_not_rewritten(stack, learned, tmp_path):
    before = _submitted(stack)
    planned = _touch_job(stack, tmp_path / "ran")
    assert _push(stack, planned) == "sent"  # as if the reply had been lost
    job = stack.runtime.submit(planned, maybe_written=True)
    assert job.id == planned.job_id
    assert _runs(stack, tmp_path / "ran", planned.job_id) == 1  # the second copy ran nothing
    assert _submitted(stack) == before + 1
    assert stack.runtime.get_job(planned.job_id).attempts == 1


def test_an_unknown_outcome_that_wrote_nothing_is_written_and_sent(stack, learned, tmp_path):
    before = _submitted(stack)
    planned = _touch_job(stack, tmp_path / "ran")
    stack.runtime.submit(planned, maybe_written=True)
    assert _runs(stack, tmp_path / "ran", planned.job_id) == 1
    assert _submitted(stack) == before + 1
