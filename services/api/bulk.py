"""Bulk actions: cancel every queued job of a task or profile, retry every failed (or
canceled) one. ``POST /jobs/cancel`` and ``POST /jobs/retry``; the dashboard's bulk
buttons run the same functions.

Each call is bounded: at most ``limit`` jobs (1000 at most), found by walking the
smallest matching index newest first for at most ``MAX_PAGES`` listing pages. The answer
says how many it touched and whether more may match (call again). A job that changed
state between the listing and the action is skipped, not an error. Retrying a job that
was retried before (its ``retry-of`` key still names the new job) is skipped too, so
repeating a bulk retry never runs a job twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from taskrouter.backends.errors import engine_errors
from taskrouter.backends.queries import JobFilter, list_jobs
from taskrouter.backends.runtime import Runtime
from taskrouter.errors import JobNotFound, JobStateConflict
from taskrouter.job import Job

from .deps import responses, runtime_of
from .errors import error

MAX_BULK = 1000
MAX_PAGES = 20  # listing pages (each examines at most backends.queries.SCAN_BUDGET entries)
PAGE = 500

router = APIRouter(prefix="/jobs", tags=["jobs"])


@dataclass(slots=True)
class BulkResult:
    action: str
    filters: dict[str, str]
    touched: int = 0
    skipped: int = 0
    more: bool = False
    ids: list[str] = field(default_factory=list)  # the jobs touched
    new_ids: list[str] = field(default_factory=list)  # retry: the new jobs, in the same order

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "filters": self.filters,
            "touched": self.touched,
            "skipped": self.skipped,
            "more": self.more,
            "ids": self.ids,
        }
        if self.action == "retry":
            out["new_ids"] = self.new_ids
        return out


def matching(runtime: Runtime, filters: JobFilter, limit: int) -> tuple[list[Job], bool]:
    """Up to ``limit`` jobs matching ``filters``, newest first, and whether more may."""
    found: list[Job] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = list_jobs(runtime.store, filters, limit=min(PAGE, limit - len(found)), cursor=cursor)
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or len(found) >= limit:
            break
    return found, cursor is not None


def cancel_queued(
    runtime: Runtime, *, task: str | None = None, profile: str | None = None, limit: int = MAX_BULK
) -> BulkResult:
    """Cancel the queued jobs of ``task`` and/or ``profile`` (at most ``limit``)."""
    filters = JobFilter(state="queued", task=task, profile=profile)
    jobs, more = matching(runtime, filters, limit)
    result = BulkResult("cancel", _shown(filters), more=more)
    for job in jobs:
        try:
            runtime.cancel_job(job.id)
        except (JobNotFound, JobStateConflict):
            result.skipped += 1  # finished or expired since it was listed
            continue
        result.touched += 1
        result.ids.append(job.id)
    return result


def retry_ended(
    runtime: Runtime,
    *,
    state: str = "failed",
    task: str | None = None,
    profile: str | None = None,
    limit: int = MAX_BULK,
) -> BulkResult:
    """Retry the ``state`` (failed or canceled) jobs of ``task`` and/or ``profile``, each
    as a new job (``Runtime.retry_job``); jobs already retried are skipped."""
    filters = JobFilter(state=state, task=task, profile=profile)
    jobs, more = matching(runtime, filters, limit)
    result = BulkResult("retry", _shown(filters), more=more)
    store = runtime.store
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for job in jobs:
            pipe.exists(store.keys.idempotency(job.profile, f"retry-of:{job.id}"))
        retried = pipe.execute() if jobs else []
    for job, before in zip(jobs, retried, strict=True):
        if before:
            result.skipped += 1
            continue
        try:
            new = runtime.retry_job(job.id)
        except (JobNotFound, JobStateConflict):
            result.skipped += 1
            continue
        result.touched += 1
        result.ids.append(job.id)
        result.new_ids.append(new.id)
    return result


def _shown(filters: JobFilter) -> dict[str, str]:
    return dict(filters.pairs())


# -- HTTP ------------------------------------------------------------------------------------


class BulkOut(BaseModel):
    action: Literal["cancel", "retry"]
    filters: dict[str, str] = Field(description="the filters the jobs matched")
    touched: int = Field(description="jobs canceled, or retried as new jobs")
    skipped: int = Field(description="matched, but changed state meanwhile (or retried before)")
    more: bool = Field(description="more jobs may match: call again")
    ids: list[str] = Field(description="the jobs touched")
    new_ids: list[str] | None = Field(None, description="retry: the new job of each, in order")


Limit = Annotated[int, Query(ge=1, le=MAX_BULK, description=f"at most this many (<= {MAX_BULK})")]


def _no_filter() -> JSONResponse:
    return error(
        422,
        [
            {
                "loc": ["query", "task"],
                "msg": "give task or profile (or both): a bulk action never matches every job",
                "type": "missing",
            }
        ],
    )


@router.post(
    "/cancel",
    response_model=BulkOut,
    responses=responses(422, 503),
    summary="Cancel the queued jobs of a task or profile",
)
def bulk_cancel(
    request: Request,
    task: str | None = None,
    profile: str | None = None,
    limit: Limit = MAX_BULK,
) -> JSONResponse:
    """Every queued job of ``task`` and/or ``profile``, at most ``limit`` per call: each
    never runs. ``more`` is true when more may match."""
    if not task and not profile:
        return _no_filter()
    return JSONResponse(
        cancel_queued(runtime_of(request), task=task, profile=profile, limit=limit).to_dict()
    )


@router.post(
    "/retry",
    response_model=BulkOut,
    responses=responses(422, 503),
    summary="Retry the failed (or canceled) jobs of a task or profile",
)
def bulk_retry(
    request: Request,
    state: Literal["failed", "canceled"],
    task: str | None = None,
    profile: str | None = None,
    limit: Limit = MAX_BULK,
) -> JSONResponse:
    """Each matching job becomes a new job with the same task and arguments (its
    ``retry_of`` names the old one); jobs retried before are skipped."""
    if not task and not profile:
        return _no_filter()
    result = retry_ended(runtime_of(request), state=state, task=task, profile=profile, limit=limit)
    return JSONResponse(result.to_dict())
