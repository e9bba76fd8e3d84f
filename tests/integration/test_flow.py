"""Flow control on real workers: progress and checkpoints."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from taskrouter.services.api import create_app
from tests.integration import flow_app
from tests.integration.conftest import Stack, own_worker, poll

pytestmark = pytest.mark.integration


@pytest.fixture
def http(stack: Stack) -> Iterator[TestClient]:
    from taskrouter.settings import Settings

    app = create_app(Settings.from_env(stack.env), stack.runtime, allowed_hosts=["testserver"])
    with TestClient(app) as client:
        yield client


def _running(stack: Stack, job_id: str) -> dict[str, str] | None:
    record = stack.runtime.store.read(job_id)
    return record if record and record["state"] == "running" else None


def test_progress_and_checkpoints_show_in_the_api_while_the_job_runs(stack, http, tmp_path):
    release = tmp_path / "release"
    job = flow_app.report_progress.enqueue(str(release))

    def reported() -> dict | None:
        body = http.get(f"/jobs/{job.id}", params={"include": "flow"}).json()
        return body if body["flow"]["progress"] else None

    body = poll(reported, 30, "the progress report")
    assert body["state"] == "running"
    assert body["flow"]["progress"]["fraction"] == 0.5
    assert body["flow"]["progress"]["message"] == "page 5 of 10"
    assert body["flow"]["progress"]["at"].endswith("Z")
    assert body["flow"]["checkpoints"] == {"page": 5}
    # The contract's job JSON is unchanged without ?include=flow.
    assert "flow" not in http.get(f"/jobs/{job.id}").json()
    release.touch()
    assert job.wait(30) == "ok"
    assert job.progress["fraction"] == 0.5 and job.checkpoints == {"page": 5}


def test_unknown_include_is_refused(stack, http, tmp_path):
    job = flow_app.report_progress.enqueue(str(tmp_path))  # exists: no wait
    assert http.get(f"/jobs/{job.id}", params={"include": "flows"}).status_code == 422
    assert job.wait(30) == "ok"


@pytest.mark.parametrize(
    "engine, fn, queue",
    [
        ("rq", flow_app.pipeline_rq, "fault-rq"),
        ("celery", flow_app.pipeline_celery, "fault-celery"),
    ],
)
def test_checkpointed_job_killed_mid_run_resumes_at_its_checkpoint(
    stack, tmp_path, engine, fn, queue
):
    runs = f"{stack.prefix}:t:runs:{uuid.uuid4().hex}"
    marker = tmp_path / "marker"
    stall_at = 4
    with own_worker(stack, engine, [queue]):
        job = fn.enqueue(runs, str(marker), stall_at)
        record = poll(lambda: marker.exists() and _running(stack, job.id), 30, "step 4")
        assert job.refresh().progress["message"] == "step 3 of 6"
        os.kill(int(record["worker"].rsplit("/", 1)[1]), signal.SIGKILL)
        killed = time.monotonic()
        result = job.wait(30)
    billed = stack.runtime.store.client.lrange(runs, 0, -1)
    # Steps 1 to 3 were paid for once; the step the kill interrupted ran again.
    assert billed == ["1:1", "1:2", "1:3", "1:4", "2:4", "2:5", "2:6"], billed
    assert result == {"steps": [f"step{i}" for i in range(1, 7)], "attempt": 2}
    assert job.attempts == 2 and job.history[0]["error"]["type"] == "WorkerLost"
    assert job.checkpoints["step3"] == {"step": 3, "tokens": 300}
    assert job.progress["fraction"] == 1.0
    assert time.monotonic() - killed < 30
