"""Request and response bodies of the HTTP API, in one place.

Responses are built from ``Job.to_dict()`` and sent as they are (the routes return a
Response), so these models document them in OpenAPI, and the schemathesis run checks the
server against that documentation, without paying for validation on every request.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskrouter import codec
from taskrouter.errors import PayloadError
from taskrouter.states import STATES

State = Literal["queued", "scheduled", "running", "retrying", "succeeded", "failed", "canceled"]
Engine = Literal["celery", "rq"]
Lane = Literal["prefork", "fork", "io"]
assert set(State.__args__) == set(STATES)  # type: ignore[attr-defined]


def _valid_json(value: Any, what: str) -> Any:
    # JSON allows "\ud800" (a lone surrogate), which Python decodes into a str that no
    # UTF-8 encoder accepts; refuse it here, where the field can be named, not in Redis.
    # The codec's depth limit first: json.dumps recurses, and a body nested about a
    # thousand levels deep still parses.
    try:
        codec.check_depth(value, what)
    except PayloadError as exc:
        raise ValueError(str(exc)) from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} holds a lone surrogate (\\ud800-\\udfff): not valid UTF-8"
        ) from None
    return value


class SubmitJob(BaseModel):
    """``POST /jobs``: a call of a registered task."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, description="registered task name")
    args: list[Any] = Field(default_factory=list, description="positional arguments (JSON)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="a second submission with the same key (and profile) returns the first job",
    )

    @field_validator("args")
    @classmethod
    def _valid_args(cls, value: list[Any]) -> list[Any]:
        for i, arg in enumerate(value):
            _valid_json(arg, f"argument {i}")
        return value

    @field_validator("kwargs")
    @classmethod
    def _valid_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, arg in value.items():
            _valid_json(arg, f"argument {name!r}")
        _valid_json(list(value), "a keyword argument's name")
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _valid_key(cls, value: str | None) -> str | None:
        return _valid_json(value, "the value")  # type: ignore[no-any-return]


class JobError(BaseModel):
    type: str
    message: str


class JobOut(BaseModel):
    """The contract's job JSON (``Job.to_dict()``)."""

    id: str
    task: str
    profile: str
    backend: Engine
    queue: str
    state: State
    attempts: int
    created_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: Any = Field(description="the return value as plain JSON, once succeeded")
    error: JobError | None
    workflow_id: str | None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next (older) page; null at the end"
    )


class Issue(BaseModel):
    """One problem with a request, located as FastAPI does: ["body", "args", 0]."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error: a message, or the list of problems of an invalid request (422)."""

    detail: str | list[Issue]


class RetriesOut(BaseModel):
    max: int
    backoff: list[float] = Field(description="seconds before each retry; the last repeats")


class RunTimesOut(BaseModel):
    """Run times of a profile's last attempts (its sketch), in seconds."""

    count: int
    p50: float
    p90: float
    p95: float


class TaskRunTimesOut(RunTimesOut):
    """The same, for one task of the profile."""

    task: str


class RouteOut(BaseModel):
    """Where adaptive routing sends a profile's new jobs now."""

    lane: Lane
    backend: Engine
    queue: str
    switched_at: int | None = Field(description="ms since the epoch of the last switch")
    switches: int
    rule: Literal["observed", "latency"]
    reason: str = Field(description="what the observed figures decide now, and why")
    next_lane: Lane = Field(description="the lane the next janitor pass puts it on")


class ObservedOut(BaseModel):
    """The declared expected_latency against the observed run times, and what they say."""

    expected_latency: float = Field(description="seconds, as declared")
    observed: RunTimesOut
    observed_backend: Engine | None = Field(description="where the observed p90 would route it")
    observed_lane: Lane | None
    observed_reason: str | None
    edit: str = Field(description="the policy edit that routes it as observed; empty: none")
    line: int | None = Field(description="the line of the policy file where the profile starts")
    tasks: list[TaskRunTimesOut] = Field(description="per task of the profile, by name")
    adaptive: RouteOut | None = Field(description="null unless routing.adaptive routes it")


class ProfileOut(BaseModel):
    """A profile of the policy, where it routes, why, and every derived engine setting."""

    profile: str
    backend: Engine
    rule: Literal["explicit", "workflow", "observed", "latency"]
    reason: str
    queue: str
    timeout: float = Field(description="seconds; Celery's soft time limit")
    time_limit: float = Field(description="seconds; Celery's hard time limit")
    job_timeout: int = Field(description="seconds; RQ's job_timeout")
    keep_results: int = Field(description="seconds a finished job's record is kept")
    max_attempts: int
    retries: RetriesOut
    long_running: bool
    concurrency: int | None
    rate_limit: str | None
    observed: ObservedOut | None = None
    per_key: PerKeyOut | None = Field(description="limits per limit key (a tenant, a model)")
    retry_after: RetryAfterOut
    budget: BudgetOut | None
    paused: str | None = Field(
        description='"manual" (taskrouter pause), when a RetryAfter pause ends, or null'
    )
    spend: float | None = Field(description="charged in the current budget window")


class PerKeyOut(BaseModel):
    key: str | None = Field(description="the task argument whose value is the key")
    concurrency: int | None
    rate_limit: str | None


class RetryAfterOut(BaseModel):
    pause: Literal["none", "key", "profile"]
    http_429: bool
    default: float = Field(description="seconds, for a 429 without a Retry-After header")
    max: int


class BudgetOut(BaseModel):
    limit: float
    per: float = Field(description="seconds: the length of a budget window")
    per_key: float | None
    when_reached: Literal["pause", "refuse"]
    price: float | None = Field(description="charged at each start per unit of its cost")


class PauseOut(BaseModel):
    profile: str
    paused: Literal["manual"] | None
    was_paused: bool | None = Field(description="resume: whether the profile was paused")


class ProfilesOut(BaseModel):
    profiles: list[ProfileOut]
    celery_visibility_timeout: int
    celery_visibility_reason: str


class Check(BaseModel):
    name: str
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: list[Check]
    missing: list[str] = Field(description="what is not ready, by name")
    warnings: list[str] = Field(
        default_factory=list,
        description="what works but is unsafe, e.g. a Redis maxmemory-policy that evicts",
    )


class Health(BaseModel):
    status: Literal["ok"]


class ScheduleOut(BaseModel):
    """A schedule of the policy (``schedules:``), its next and last run."""

    name: str
    task: str
    when: str = Field(description="the schedule in words: cron '30 2 * * *' (Europe/Berlin)")
    cron: str | None = Field(description="the 5-field cron expression, or null")
    timezone: str | None = Field(description="the cron expression's IANA time zone, or null")
    every: float | None = Field(description="seconds between ticks of an interval, or null")
    jitter: float = Field(description="seconds: each job is due up to this long after its tick")
    missed: Literal["run-once", "skip"] = Field(description="what ticks no janitor took give")
    next_run: str = Field(description="the next tick, ISO 8601 UTC")
    last_tick: str | None = Field(description="the last tick taken, with or without a job")
    last_run: str | None = Field(description="when the last job was made")
    last_job: str | None = Field(description="the last job's id (GET /jobs/{id})")
    last_job_state: State | None = Field(description="null: no job yet, or its record expired")


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]
