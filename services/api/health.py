"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from taskrouter.backends.runtime import Runtime
from taskrouter.backends.store import WorkerRegistry
from taskrouter.errors import BackendUnavailable

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
    engine that the policy routes profiles to. 503 names whatever is missing."""
    checks = readiness(runtime_of(request))
    missing = [c["name"] for c in checks if not c["ok"]]
    body = {"ready": not missing, "checks": checks, "missing": missing}
    return JSONResponse(body, status_code=503 if missing else 200)


def readiness(runtime: Runtime) -> list[dict[str, object]]:
    engines = sorted({ps.backend for ps in runtime.derived.profiles.values()})
    checks = [_check("redis", runtime.store.ping)]
    if "celery" in engines:
        checks.append(_check("celery broker", runtime.celery.ping))
    registry = WorkerRegistry(runtime.store)
    for engine in engines:
        checks.append(_workers(registry, engine))
    return checks


def _workers(registry: WorkerRegistry, engine: str) -> dict[str, object]:
    name = f"{engine} workers"
    try:
        alive = registry.alive(engine)
    except BackendUnavailable:
        return {"name": name, "ok": False, "detail": "unknown: Redis is unreachable"}
    detail = f"{len(alive)} alive" if alive else "no live worker (heartbeats: taskrouter worker)"
    return {"name": name, "ok": bool(alive), "detail": detail}


def _check(name: str, probe: Callable[[], None]) -> dict[str, object]:
    try:
        probe()
    except BackendUnavailable as exc:
        return {"name": name, "ok": False, "detail": exc.detail}
    return {"name": name, "ok": True, "detail": "ok"}
