"""``/profiles``: each profile of the policy, the engine it routes to and why, and what its
observed run times say (``backends/adaptive.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse

from taskrouter.backends import adaptive
from taskrouter.backends.heartbeats import WorkerRegistry
from taskrouter.backends.runtime import Runtime
from taskrouter.derive import Derived, ProfileSettings
from taskrouter.job import iso

from .deps import responses, runtime_of
from .schemas import PauseOut, ProfilesOut

router = APIRouter(tags=["profiles"])


def profile_dict(ps: ProfileSettings) -> dict[str, Any]:
    return {
        "profile": ps.profile,
        "backend": ps.backend,
        "rule": ps.rule,
        "reason": ps.reason,
        "queue": ps.queue,
        "timeout": ps.soft_time_limit,
        "time_limit": ps.time_limit,
        "job_timeout": ps.job_timeout,
        "keep_results": ps.keep_results,
        "max_attempts": ps.max_attempts,
        "retries": {"max": ps.retries.max, "backoff": list(ps.retries.backoff)},
        "long_running": ps.long_running,
        "concurrency": ps.concurrency,
        "rate_limit": None if ps.rate_limit is None else str(ps.rate_limit),
        "per_key": None
        if ps.per_key.key is None and ps.per_key.concurrency is None and not ps.per_key.rate_limit
        else {
            "key": ps.per_key.key,
            "concurrency": ps.per_key.concurrency,
            "rate_limit": None if ps.per_key.rate_limit is None else str(ps.per_key.rate_limit),
        },
        "retry_after": {
            "pause": ps.retry_after.pause,
            "http_429": ps.retry_after.http_429,
            "default": ps.retry_after.default,
            "max": ps.retry_after.max,
        },
        "budget": None
        if ps.budget is None
        else {
            "limit": ps.budget.limit,
            "per": ps.budget.per,
            "per_key": ps.budget.per_key,
            "when_reached": ps.budget.when_reached,
            "price": ps.budget.price,
        },
    }


def profiles_dict(derived: Derived) -> dict[str, Any]:
    return {
        "profiles": [profile_dict(ps) for ps in derived.profiles.values()],
        "celery_visibility_timeout": derived.visibility_timeout,
        "celery_visibility_reason": derived.visibility_reason,
    }


def observed_profiles_dict(runtime: Runtime) -> dict[str, Any]:
    """profiles_dict with each profile's observed run times (``observed``); a profile
    that adaptive routing routes shows the engine and queue of its route now, and the
    rule and reason of what its observed figures decide."""
    out = profiles_dict(runtime.derived)
    registry = WorkerRegistry(runtime.store, runtime.settings.worker_alive_window)
    seen = adaptive.report(runtime.store, runtime.derived.policy, registry.live)
    for entry in out["profiles"]:
        observed = entry["observed"] = seen.get(entry["profile"])
        route = (observed or {}).get("adaptive")
        if route:
            entry.update(backend=route["backend"], queue=route["queue"], rule=route["rule"])
            entry["reason"] = route["reason"]
    return out


@router.get("/profiles", response_model=ProfilesOut, summary="The policy's profiles")
def list_profiles(request: Request) -> JSONResponse:
    """Every profile in policy order: its engine, the rule and reason that chose it, its
    queue, the settings derived for the engines (as ``taskrouter policy explain``), its
    observed run times against its declared expected_latency (as ``taskrouter policy
    advise``), and its pause and budget spend now."""
    runtime = runtime_of(request)
    body = observed_profiles_dict(runtime)
    live = _live(runtime)
    for entry in body["profiles"]:
        entry.update(live[entry["profile"]])
    return JSONResponse(body)


def _live(runtime: Any) -> dict[str, dict[str, Any]]:
    """Each profile's pause and its spend in the current budget window (from Redis)."""
    profiles = runtime.derived.profiles
    paused = runtime.store.paused(list(profiles))
    budgeted = [(name, ps.budget, None) for name, ps in profiles.items() if ps.budget is not None]
    spends = dict(zip([b[0] for b in budgeted], runtime.store.spent_many(budgeted), strict=True))
    out: dict[str, dict[str, Any]] = {}
    for name in profiles:
        until = paused[name]
        shown = until if until in (None, "manual") else iso(until)
        out[name] = {"paused": shown, "spend": spends.get(name)}
    return out


Profile = Annotated[str, Path(description="a profile of the policy")]


def _known(runtime: Any, profile: str) -> None:
    if profile not in runtime.derived.profiles:
        raise HTTPException(404, f"profile {profile!r} is not in the policy")


@router.post(
    "/profiles/{profile}/pause",
    response_model=PauseOut,
    responses=responses(404, 503),
    summary="Pause a profile",
)
def pause(profile: Profile, request: Request) -> JSONResponse:
    """Hold every new start of the profile, on every worker, until it is resumed: its
    jobs wait ``scheduled`` holding no worker slot (as ``taskrouter pause``)."""
    runtime = runtime_of(request)
    _known(runtime, profile)
    runtime.store.pause(profile)
    return JSONResponse({"profile": profile, "paused": "manual", "was_paused": None})


@router.post(
    "/profiles/{profile}/resume",
    response_model=PauseOut,
    responses=responses(404, 503),
    summary="Resume a profile",
)
def resume(profile: Profile, request: Request) -> JSONResponse:
    """End the profile's pause (by hand, or after a RetryAfter with pause: profile)."""
    runtime = runtime_of(request)
    _known(runtime, profile)
    was = runtime.store.resume(profile)
    return JSONResponse({"profile": profile, "paused": None, "was_paused": was})
