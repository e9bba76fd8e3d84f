"""Tasks of the flow-control tests (test_flow.py): progress, checkpoints, RetryAfter.

Imported by app.py, so that every test worker registers them."""

from __future__ import annotations

import os
import time
from typing import Any

from taskrouter import current_job, task

STEPS = 6


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])


def _pipeline(runs: str, marker: str, stall_at: int) -> dict[str, Any]:
    """A pipeline of STEPS paid steps; each one done is checkpointed. The first attempt
    stalls inside step ``stall_at`` (after touching ``marker``) until it is killed."""
    job = current_job()
    done = job.checkpoints
    for step in range(1, STEPS + 1):
        name = f"step{step}"
        if name in done:
            continue
        _redis().rpush(runs, f"{job.attempt}:{step}")  # what the provider billed
        if step == stall_at and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(60)
        done[name] = {"step": step, "tokens": 100 * step}
        job.checkpoint(name, done[name])
        job.progress(step / STEPS, f"step {step} of {STEPS}")
    return {"steps": sorted(done), "attempt": job.attempt}


@task(profile="fault_rq", name="t.flow_pipeline_rq")
def pipeline_rq(runs: str, marker: str, stall_at: int) -> dict[str, Any]:
    return _pipeline(runs, marker, stall_at)


@task(profile="fault_celery", name="t.flow_pipeline_celery")
def pipeline_celery(runs: str, marker: str, stall_at: int) -> dict[str, Any]:
    return _pipeline(runs, marker, stall_at)


@task(profile="quick", name="t.flow_progress")
def report_progress(release: str) -> str:
    """Reports half way, then waits for ``release`` to exist."""
    current_job().progress(0.5, "page 5 of 10")
    current_job().checkpoint("page", 5)
    deadline = time.monotonic() + 30
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "ok"
