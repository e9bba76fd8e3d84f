"""What every route needs: the runtime, and the error responses it documents."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from taskrouter.backends.aio import AsyncRecords
from taskrouter.backends.runtime import Runtime

from .schemas import ErrorOut


def runtime_of(request: Request) -> Runtime:
    """The runtime the lifespan opened. A plain attribute read rather than a Depends():
    this runs on every request, and dependency solving costs more than the read."""
    rt: Runtime = request.app.state.runtime
    return rt


def records_of(request: Request) -> AsyncRecords:
    """The async record reader of the hot path (GET /jobs/{id})."""
    records: AsyncRecords = request.app.state.records
    return records


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


DESCRIPTIONS = {
    404: "unknown task, job or profile",
    409: "the job's state does not allow this, or its record is damaged",
    413: "request body too large",
    422: "invalid request: each problem with its location",
    429: "the profile spent its budget for this window (Retry-After: when the next opens)",
    503: "Redis, the Celery broker or an engine is unreachable (detail names which)",
}
