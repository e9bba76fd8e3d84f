"""The engines' own tools against live taskrouter workers (README, "Using Flower,
rq-dashboard and `rq info`"): Celery's CLI through taskrouter.services.celery_tools, and
rq info with taskrouter's serializer, read the real task names."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rq.job import Job as RQJob

from taskrouter.backends.rq_backend import CodecSerializer
from tests.integration import app
from tests.integration.conftest import ROOT, poll

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


def _env(stack) -> dict[str, str]:
    # What a user exports for the workers, plus RQ's prefix (printed by README's commands).
    return {**stack.env, "RQ_KEY_PREFIX": stack.runtime.settings.rq_key_prefix or "rq"}


def _tool(stack, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        env=_env(stack),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_celery_inspect_registered_lists_the_real_task_names(stack):
    out = _tool(
        stack,
        "celery",
        "-A",
        "taskrouter.services.celery_tools",
        "inspect",
        "registered",
        "--json",
        "--timeout",
        "5",
    )
    replies = json.loads(out)
    names = {n for reply in replies.values() for n in reply} if isinstance(replies, dict) else set()
    if not names:  # celery 5.7 prints one JSON object per node
        names = {n for reply in replies for node in reply.values() for n in node}
    assert {"t.echo", "t.touch", "t.sleep_celery"} <= names, names
    # Celery's own built-ins other than the canvas ones are not there to be planted.
    assert not names & {"celery.accumulate", "celery.map", "celery.backend_cleanup"}


def test_celery_inspect_active_shows_a_running_task_by_name_and_args(stack, tmp_path):
    job = app.pid_sleep_celery.enqueue(str(tmp_path / "pid"), 4)
    poll(lambda: job.refresh().state == "running", 30, "the job to start")
    out = _tool(
        stack,
        "celery",
        "-A",
        "taskrouter.services.celery_tools",
        "inspect",
        "active",
        "--json",
        "--timeout",
        "5",
    )
    assert "t.pid_sleep_celery" in out, out
    assert f'"id": "{job.id}"' in out  # the task id is the job id
    job.wait(30)


def test_rq_info_lists_the_workers_and_queues_and_rq_jobs_carry_the_real_names(stack):
    value = {"doc": f"d-{uuid.uuid4().hex[:6]}"}
    job = app.long_echo.enqueue(value)
    assert job.wait(30) == value
    url = stack.redis_url
    serializer = "taskrouter.backends.rq_backend.CodecSerializer"
    out = _tool(stack, "rq", "info", "--url", url, "--serializer", serializer, "-R")
    assert "long" in out  # the queue of the long profile
    assert "worker" in out.lower()
    # rq info shows no job names; rq-dashboard and RQ's API read them from the job hash.
    rq_job = RQJob.fetch(job.id, connection=stack.runtime.rq.connection, serializer=CodecSerializer)
    assert rq_job.func_name == "t.long_echo"
    assert rq_job.description == f"t.long_echo({value!r},)"
    assert rq_job.return_value() == value
