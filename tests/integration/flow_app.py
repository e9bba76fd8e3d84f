"""Tasks of the flow-control tests (test_flow.py): progress, checkpoints, RetryAfter.

Imported by app.py, so that every test worker registers them."""

from __future__ import annotations

import os
import time
from typing import Any

from taskrouter import RetryAfter, current_job, task

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


def _call(url: str, tenant: str, client: str) -> str:
    """One paid call; the provider may answer 429 (raise_for_status raises it)."""
    if client == "requests":
        import requests

        r = requests.get(url, params={"tenant": tenant}, timeout=10)
        r.raise_for_status()
        return r.text
    import httpx

    response = httpx.get(url, params={"tenant": tenant}, timeout=10)
    response.raise_for_status()
    return response.text


@task(profile="flow_celery", name="t.flow_call_celery")
def call_celery(url: str, tenant: str, client: str = "httpx") -> str:
    return _call(url, tenant, client)


@task(profile="flow_rq", name="t.flow_call_rq")
def call_rq(url: str, tenant: str, client: str = "httpx") -> str:
    return _call(url, tenant, client)


@task(profile="flow_profile_pause", name="t.flow_wait_once")
def wait_once(counter: str, seconds: float) -> int:
    """Raises RetryAfter(seconds) on its first run unless seconds is 0; returns how many
    runs it took."""
    runs = int(_redis().incr(counter))
    if runs == 1 and seconds > 0:
        raise RetryAfter(seconds, "the provider is busy")
    return runs


@task(profile="flow_celery", name="t.flow_always_later")
def always_later(seconds: float) -> None:
    raise RetryAfter(seconds)


def _span(spans: str, tenant: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    _redis().rpush(spans, f"{tenant}:{start:.6f}:{time.time():.6f}")


@task(profile="keyed", name="t.flow_keyed")
def keyed(spans: str, tenant: str, seconds: float) -> None:
    _span(spans, tenant, seconds)


@task(profile="keyed_rq", name="t.flow_keyed_rq")
def keyed_rq(spans: str, tenant: str, seconds: float) -> None:
    _span(spans, tenant, seconds)


@task(profile="key_rated", name="t.flow_key_rated")
def key_rated(spans: str, tenant: str) -> None:
    _span(spans, tenant, 0)


@task(profile="weighted", name="t.flow_weighted")
def weighted(spans: str, label: str) -> None:
    _span(spans, label, 0)


@task(profile="fair", name="t.flow_fair")
def fair(spans: str, tenant: str, seconds: float) -> None:
    _span(spans, tenant, seconds)


@task(profile="budgeted", name="t.flow_spend")
def spend(amount: float) -> float:
    current_job().charge(amount)
    return amount


@task(profile="budget_refuse", name="t.flow_spend_refuse")
def spend_refuse(amount: float) -> float:
    current_job().charge(amount)
    return amount


@task(profile="priced", name="t.flow_priced")
def priced(value: int) -> int:
    return value


@task(profile="fair_weighted", name="t.flow_fair_weighted")
def fair_weighted(spans: str, tenant: str, seconds: float) -> None:
    _span(spans, tenant, seconds)
