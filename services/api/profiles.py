"""``/profiles``: each profile of the policy, the engine it routes to and why, and what its
observed run times say (``backends/adaptive.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from taskrouter.backends import adaptive
from taskrouter.backends.heartbeats import WorkerRegistry
from taskrouter.backends.runtime import Runtime
from taskrouter.derive import Derived, ProfileSettings

from .deps import runtime_of
from .schemas import ProfilesOut

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
    queue, the settings derived for the engines (as ``taskrouter policy explain``), and
    its observed run times against its declared expected_latency (as ``taskrouter
    policy advise``)."""
    return JSONResponse(observed_profiles_dict(runtime_of(request)))
