"""``/schedules``: each schedule of the policy, its next and last run, and the state of
its last job (as ``taskrouter schedules``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from taskrouter.backends.periodic import statuses

from .deps import responses, runtime_of
from .schemas import SchedulesOut

router = APIRouter(tags=["schedules"])


@router.get(
    "/schedules",
    response_model=SchedulesOut,
    summary="The policy's periodic tasks",
    responses=responses(503),
)
def list_schedules(request: Request) -> JSONResponse:
    """Every schedule in policy order. A periodic job is an ordinary job: ``last_job``
    is its id, readable with ``GET /jobs/{id}``. (Sync: the pool thread does its two
    Redis round trips.)"""
    runtime = runtime_of(request)
    found = statuses(runtime.store, runtime.derived.policy.schedules)
    return JSONResponse({"schedules": [s.to_dict() for s in found]})
