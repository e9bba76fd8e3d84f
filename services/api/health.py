"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from taskrouter.backends import memory
from taskrouter.backends.heartbeats import WorkerInfo, WorkerRegistry, counted, describe
from taskrouter.backends.runtime import Runtime
from taskrouter.errors import BackendUnavailable, TaskrouterError
from taskrouter.policy import LANE_ENGINE

from .deps import runtime_of
from .schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> JSONResponse:
    """The process is up and serving. No I/O, no token: a dead Redis must not make an
    orchestrator restart a healthy API process (that is what /readyz is for)."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: see missing"}},
    summary="Readiness",
)
def readyz(request: Request) -> JSONResponse:
    """Redis and the Celery broker answer, and at least one worker is alive for each
    lane that the policy routes profiles to. 503 names whatever is missing."""
    runtime = runtime_of(request)
    checks = readiness(runtime)
    missing = [c["name"] for c in checks if not c["ok"]]
    body = {"ready": not missing, "checks": checks, "missing": missing}
    body["warnings"] = warnings(runtime) if "redis" not in missing else []
    return JSONResponse(body, status_code=503 if missing else 200)


def readiness(runtime: Runtime) -> list[dict[str, object]]:
    """Redis, the Celery broker, and a live worker for each lane the policy routes
    profiles to, each named with the workers (and their supervisors) found."""
    used = {ps.lane for ps in runtime.derived.profiles.values()}
    lanes = [lane for lane in ("prefork", "io", "fork") if lane in used]
    checks = [_check("redis", runtime.store.ping)]
    if any(LANE_ENGINE[lane] == "celery" for lane in lanes):
        checks.append(_check("celery broker", lambda: runtime.backend("celery").ping()))
    try:
        live: list[WorkerInfo] | None = WorkerRegistry(
            runtime.store, runtime.settings.worker_alive_window
        ).live()
    except BackendUnavailable:
        live = None
    for lane in lanes:
        checks.append(_workers(live, lane))
    return checks


def warnings(runtime: Runtime) -> list[str]:
    """What works but is unsafe: a Redis that may evict job records when full."""
    try:
        warning = memory.check(runtime.store.client)
    except TaskrouterError:
        return []  # unreachable since the check above: the next call says so
    return [warning] if warning else []


def _workers(live: list[WorkerInfo] | None, lane: str) -> dict[str, object]:
    engine = LANE_ENGINE[lane]
    name = f"{engine} workers" if lane != "io" else "io lane workers"
    if live is None:
        return {"name": name, "ok": False, "detail": "unknown: Redis is unreachable"}
    mine = [w for w in live if w.engine == engine and (w.lane or lane) == lane]
    if not mine:
        return {"name": name, "ok": False, "detail": f"no live worker of the {lane} lane"}
    n = sum(counted(w) for w in mine)
    detail = f"{n} alive: " + "; ".join(describe(w) for w in mine)
    return {"name": name, "ok": True, "detail": detail}


def _check(name: str, probe: Callable[[], None]) -> dict[str, object]:
    try:
        probe()
    except BackendUnavailable as exc:
        return {"name": name, "ok": False, "detail": exc.detail}
    except TaskrouterError as exc:
        return {"name": name, "ok": False, "detail": str(exc)}
    return {"name": name, "ok": True, "detail": "ok"}
