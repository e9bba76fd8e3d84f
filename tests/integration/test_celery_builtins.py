"""Celery's own built-in tasks are not runnable on a taskrouter worker: a planted message
naming one is refused as an unregistered task, and nothing executes."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.integration import app
from tests.integration.conftest import own_worker, poll

pytestmark = pytest.mark.integration

QUEUE = "fault-celery"


def test_planted_messages_naming_celery_builtins_run_nothing(stack, tmp_path):
    celery = stack.runtime.celery_app
    target = tmp_path / "touched-by-map"
    planted = {
        "celery.accumulate": {"args": (1, 2, 3)},
        "celery.backend_cleanup": {},
        # celery.map would call a registered task's body directly, outside any job.
        "celery.map": {"args": ({"task": "t.touch", "args": [], "kwargs": {}}, [[str(target)]])},
    }
    with own_worker(stack, "celery", [QUEUE], tag="-builtins") as worker:
        name = next(n for n, p in stack.procs.items() if p is worker)
        for task, options in planted.items():
            celery.send_task(task, queue=QUEUE, task_id=f"planted-{uuid.uuid4()}", **options)
        queue = (stack.runtime.settings.celery_key_prefix or "") + QUEUE
        poll(lambda: stack.runtime.store.client.llen(queue) == 0, 30, "the planted messages")
        # A real job behind them: the worker went past them and is still serving.
        counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
        assert app.slow_once_celery.enqueue(str(tmp_path / "m"), 0, counter).wait(30) == "done"
        path = stack.log_dir / f"{name}.log"
        log = poll(
            lambda: (text := path.read_text()).count("unregistered task") >= 3 and text,
            10,
            "the worker to log the refusals",
        )
    for task in planted:
        assert re.search(rf"unregistered task of type '{re.escape(task)}'", log), log
        assert f"Task {task}[" not in log  # Celery logs every task it ran, by name
    assert not target.exists()
