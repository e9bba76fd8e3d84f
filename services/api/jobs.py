"""``/jobs``: submit, read, list, cancel and retry jobs of either engine.

Reads go to the job records only (one HGETALL for a job, the indexes for a listing),
never to an engine. The hot paths run on the event loop with an asyncio client:
``GET /jobs/{id}``, and ``POST /jobs`` of a Celery task whose message is learned (one
round trip writes the record and sends it). The rest runs in FastAPI's thread pool,
since the runtime's Redis and broker clients block. Routes return the JSON themselves
(see schemas.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from taskrouter.backends.queries import DEFAULT_LIMIT, MAX_LIMIT, JobFilter, list_jobs
from taskrouter.errors import JobNotFound
from taskrouter.job import Job
from taskrouter.registry import CallOptions, lookup

from .deps import records_of, responses, runtime_of
from .schemas import Engine, JobOut, JobPage, State, SubmitJob

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[str, Path(description="the job id")]
Include = Literal["flow"]


def _job(job: Job, status: int = 200) -> JSONResponse:
    headers = {"Location": f"/jobs/{job.id}"} if status == 202 else None
    return JSONResponse(job.to_dict(), status_code=status, headers=headers)


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses=responses(404, 413, 422, 429, 503),
    summary="Submit a job of a registered task",
)
async def submit(body: SubmitJob, request: Request) -> JSONResponse:
    """Route the call by the task's profile; answers at once with the queued job."""
    task = lookup(body.task)
    options = CallOptions(idempotency_key=body.idempotency_key)
    runtime = runtime_of(request)
    call = (task, tuple(body.args), body.kwargs, options)
    if runtime.routes.reads(task.profile):  # a route read from Redis: not on the loop
        planned = await run_in_threadpool(runtime.plan, *call)
    else:
        planned = runtime.plan(*call)
    if runtime.refuses_over_budget(planned):
        await run_in_threadpool(runtime.check_budget, planned)  # 429 once it is spent
    message = runtime.fast_message(planned)
    pushed = "unsent"
    if message is not None:  # the common Celery case: one round trip, on the loop
        pushed = await records_of(request).create_and_push(runtime.store, planned.create, message)
        if pushed == "sent":
            return _job(runtime.job_of(planned), 202)
    job = await run_in_threadpool(runtime.submit, planned, maybe_written=pushed == "unknown")
    return _job(job, 202)


@router.get(
    "",
    response_model=JobPage,
    responses=responses(422, 503),
    summary="List jobs, newest first",
)
def list_(
    request: Request,
    state: State | None = None,
    profile: str | None = None,
    backend: Engine | None = None,
    task: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JSONResponse:
    """Jobs matching every given filter. Pages never skip or repeat a job, however many
    jobs arrive while paging; a page may be short while ``next_cursor`` is set (a very
    selective filter), and ``next_cursor`` is null on the last page."""
    filters = JobFilter(state=state, profile=profile, backend=backend, task=task)
    page = list_jobs(runtime_of(request).store, filters, limit=limit, cursor=cursor)
    return JSONResponse(page.to_dict())


@router.get("/{job_id}", response_model=JobOut, responses=responses(404, 409, 503), summary="A job")
async def get(
    job_id: JobId,
    request: Request,
    include: Annotated[
        Include | None,
        Query(
            description="flow: add a `flow` member with the task's progress and checkpoints "
            "(the contract's fields stay as they are)"
        ),
    ] = None,
) -> JSONResponse:
    """The job's record as it is now: one Redis read, whichever engine runs it. 409 when
    the record is damaged (a field missing or garbled), naming what is wrong."""
    record = await records_of(request).read(job_id)
    if record is None:
        raise JobNotFound(job_id)
    job = Job.from_record(record, job_id=job_id)
    if include == "flow":
        return JSONResponse({**job.to_dict(), "flow": job.flow_dict()})
    return _job(job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=responses(404, 409, 503),
    summary="Cancel a job",
)
def cancel(job_id: JobId, request: Request) -> JSONResponse:
    """A queued job never runs; a running one is stopped, on either engine, and ends
    ``canceled``. 409 when the job already finished."""
    runtime = runtime_of(request)
    return _job(Job.from_record(runtime.cancel_job(job_id), runtime))


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    responses=responses(404, 409, 503),
    summary="Retry a failed or canceled job",
)
def retry(job_id: JobId, request: Request) -> JSONResponse:
    """A new job with the same task, arguments and profile (its record's ``retry_of``
    names this one). Asking again returns the same new job. 409 unless the job failed or
    was canceled."""
    return _job(runtime_of(request).retry_job(job_id), 202)
