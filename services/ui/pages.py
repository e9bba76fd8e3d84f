"""The dashboard's pages (GET): each is a template over one read, and each live part
of a page has a fragment route (``/ui/_/...``) that its script polls."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response

from taskrouter import codec
from taskrouter.backends import workflows
from taskrouter.backends.errors import engine_errors
from taskrouter.backends.queries import JobFilter
from taskrouter.backends.runtime import Runtime
from taskrouter.backends.store import now_ms
from taskrouter.errors import BackendUnavailable, InvalidQuery, JobNotFound, PayloadError
from taskrouter.job import Job
from taskrouter.registry import registered
from taskrouter.services.api.bulk import MAX_BULK
from taskrouter.services.api.deps import runtime_of
from taskrouter.services.api.profiles import profile_dict
from taskrouter.states import FINISHED, STATES

from . import chart, graph, profiles, queries, throughput
from .render import html, pretty
from .session import open_session
from .timerange import TimeRange, parse_range

log = logging.getLogger("taskrouter.ui")
router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(open_session)])
F = TypeVar("F", bound=Callable[..., Any])
PAGE_SIZE = 50
NOTICES = {
    "canceled": ("The job was canceled.", False),
    "retried": ("This is a new job: a retry of the one linked below.", False),
    "not-cancelable": ("The job had already finished: nothing to cancel.", True),
    "not-retryable": ("Only a failed or canceled job can be retried.", True),
    "expired": ("The form had expired (or came from another page): nothing was done.", True),
}


def failure_page(request: Request, exc: Exception) -> Response:
    if isinstance(exc, JobNotFound):
        return html(
            request, "error.html", {"heading": "Not found", "message": str(exc)}, status=404
        )
    if isinstance(exc, BackendUnavailable):
        message = f"{exc}. The page will work again once it answers."
        return html(
            request, "error.html", {"heading": "Unavailable", "message": message}, status=503
        )
    return html(
        request, "error.html", {"heading": "Invalid request", "message": str(exc)}, status=422
    )


def page_errors(fn: F) -> F:
    """Not-found, unreachable Redis and bad input as pages (the API answers JSON)."""

    @functools.wraps(fn)
    def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return fn(request, *args, **kwargs)  # type: ignore[no-any-return]
        except (JobNotFound, BackendUnavailable, InvalidQuery) as exc:
            return failure_page(request, exc)

    return wrapper  # type: ignore[return-value]


# -- overview ----------------------------------------------------------------------------------


def overview_context(runtime: Runtime) -> dict[str, Any]:
    store = runtime.store
    found = queries.workers(store)
    depths: dict[str, dict[str, int] | str] = {}
    for engine in list(queries.ENGINES):
        try:
            depths[engine] = runtime.backend(engine).queue_depths()
        except BackendUnavailable as exc:
            depths[engine] = exc.detail
        except Exception as exc:  # an engine error its adapter did not map (as /metrics)
            log.warning("dashboard: queue depths of %s failed", engine, exc_info=True)
            depths[engine] = type(exc).__name__
    return {
        "counts": queries.counts(store),
        "engines": list(queries.ENGINES),
        "sample": queries.SAMPLE,
        "chart": chart.build(throughput.series(store)),
        "depths": depths,
        "live": queries.live_per_engine(found),
        "lanes": queries.lanes(found),
        "now": now_ms(),
    }


@router.get("")
@page_errors
def overview(request: Request) -> Response:
    return html(request, "overview.html", overview_context(runtime_of(request)))


@router.get("/_/overview")
@page_errors
def overview_part(request: Request) -> Response:
    return html(request, "_overview.html", overview_context(runtime_of(request)))


# -- jobs --------------------------------------------------------------------------------------


def _choice(value: str | None, allowed: list[str] | tuple[str, ...], name: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise InvalidQuery(name, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def jobs_context(request: Request) -> dict[str, Any]:
    runtime = runtime_of(request)
    q = request.query_params
    raw = {
        k: (q.get(k) or None)
        for k in ("state", "backend", "profile", "task", "since", "until", "cursor")
    }
    problem = None
    try:
        filters = JobFilter(
            state=_choice(raw["state"], STATES, "state"),
            backend=_choice(raw["backend"], queries.ENGINES, "backend"),
            profile=raw["profile"],
            task=raw["task"],
        )
        span = parse_range(raw["since"], raw["until"])
        page = queries.list_between(
            runtime.store,
            filters,
            since_ms=span.since_ms,
            until_ms=span.until_ms,
            limit=PAGE_SIZE,
            cursor=raw["cursor"],
        )
    except InvalidQuery as exc:
        problem = f"Nothing listed: {exc}"
        span, page = TimeRange(None, None), queries.Page([], None)

    def link(**changes: str | None) -> str:
        merged = {**raw, **changes}
        return "/ui/jobs?" + urlencode({k: v for k, v in merged.items() if v})

    live = not raw["cursor"] and (span.until_ms is None or span.relative_until)
    fragment = "/ui/_/jobs?" + urlencode({k: v for k, v in raw.items() if v and k != "cursor"})
    notice = _bulk_notice(q)
    return {
        "f": SimpleNamespace(**raw),
        "page": page,
        "problem": problem,
        "states": STATES,
        "engines": list(queries.ENGINES),
        "profiles": list(runtime.derived.profiles),
        "tasks": sorted(registered()),
        "link": link,
        "live": live,
        "fragment": fragment,
        "bulk_max": MAX_BULK,
        "notice": notice,
        "now": now_ms(),
    }


def _bulk_notice(q: Any) -> dict[str, Any] | None:
    done = q.get("done")
    if done == "expired":
        return {"text": NOTICES["expired"][0], "bad": True}
    if done not in ("cancel", "retry"):
        return None
    numbers = {k: q.get(k, "0") for k in ("touched", "skipped", "more")}
    if not all(v.isdigit() for v in numbers.values()):
        return None
    touched, skipped, more = (int(numbers[k]) for k in ("touched", "skipped", "more"))
    verb = "Canceled" if done == "cancel" else "Retried"
    what = "queued" if done == "cancel" else "failed"
    text = f"{verb} {touched} {what} job{'s' if touched != 1 else ''}"
    if skipped:
        why = "changed meanwhile" + (" or retried before" if done == "retry" else "")
        text += f"; skipped {skipped} ({why})"
    text += ". More may match: click again." if more else "."
    return {"text": text, "bad": False}


@router.get("/jobs")
@page_errors
def jobs(request: Request) -> Response:
    ctx = jobs_context(request)
    return html(request, "jobs.html", ctx, status=422 if ctx["problem"] else 200)


@router.get("/_/jobs")
@page_errors
def jobs_part(request: Request) -> Response:
    return html(request, "_jobs_rows.html", jobs_context(request))


def job_context(runtime: Runtime, job_id: str) -> dict[str, Any]:
    record = runtime.read_record(job_id)
    if record is None:
        raise JobNotFound(job_id)
    job = Job.from_record(record)
    ps = runtime.derived.profiles.get(job.profile)
    args_text, args_note = _args(record)
    with engine_errors():
        retried_as = runtime.store.client.get(
            runtime.store.keys.idempotency(job.profile, f"retry-of:{job.id}")
        )
    return {
        "job": job,
        "args_text": args_text,
        "args_note": args_note,
        "result_text": _result(record),
        "history": [h for h in _history(record) if isinstance(h, dict)],
        "routing": profile_dict(ps) if ps else None,
        "retry_of": record.get("retry_of"),
        "retried_as": retried_as if retried_as != job.id else None,
        "wf_label": record.get("wf_label"),
        "due_at": record.get("due_at") if job.state in ("scheduled", "retrying") else None,
        "can_cancel": job.state not in FINISHED,
        "can_retry": job.state in ("failed", "canceled"),
        "now": now_ms(),
    }


def _args(record: dict[str, str]) -> tuple[str | None, str]:
    payload = record.get("payload")
    if not payload:
        if record.get("wf_input"):
            return None, "Written when the results it waits for are in (a workflow step)."
        return None, "No arguments are kept for this job."
    try:
        args, kwargs = codec.decode_call(payload)
    except PayloadError as exc:
        return payload, f"not readable as a call: {exc}"
    return pretty({"args": codec.plain(list(args)), "kwargs": codec.plain(kwargs)}), ""


def _result(record: dict[str, str]) -> str | None:
    raw = record.get("result")
    if not raw:
        return None
    try:
        return pretty(codec.plain(codec.loads(raw)))
    except PayloadError:
        return raw


def _history(record: dict[str, str]) -> list[Any]:
    try:
        value = json.loads(record.get("history") or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


@router.get("/jobs/{job_id}")
@page_errors
def job_page(request: Request, job_id: str) -> Response:
    ctx = job_context(runtime_of(request), job_id)
    notice = NOTICES.get(request.query_params.get("done", ""))
    ctx["notice"] = {"text": notice[0], "bad": notice[1]} if notice else None
    return html(request, "job.html", ctx)


@router.get("/_/jobs/{job_id}")
@page_errors
def job_part(request: Request, job_id: str) -> Response:
    return html(request, "_job.html", job_context(runtime_of(request), job_id))


@router.get("/jobs/{job_id}/value/{which}")
@page_errors
def whole_value(request: Request, job_id: str, which: str) -> Response:
    """A value in full, as text (never as HTML)."""
    if which not in ("args", "result"):
        raise JobNotFound(f"{job_id}/{which}")
    record = runtime_of(request).read_record(job_id)
    if record is None:
        raise JobNotFound(job_id)
    text = _args(record)[0] if which == "args" else _result(record)
    return PlainTextResponse(text or "", headers={"Content-Disposition": "inline"})


# -- workflows, profiles, workers --------------------------------------------------------------


def workflow_context(runtime: Runtime, workflow_id: str) -> dict[str, Any]:
    wf = workflows.get(runtime, workflow_id)
    linked = graph.links(runtime.store, [j.id for j in wf.jobs])
    counts: dict[str, int] = {}
    for job in wf.jobs:
        counts[job.state or "expired"] = counts.get(job.state or "expired", 0) + 1
    try:
        result = pretty(codec.plain(wf.result)) if wf.finished else None
    except PayloadError:
        result = None
    return {
        "wf": wf,
        "graph": graph.layout(wf.jobs, linked),
        "labels": {k: v[0] for k, v in linked.items()},
        "counts": counts,
        "result_text": result,
        "now": now_ms(),
    }


@router.get("/workflows/{workflow_id}")
@page_errors
def workflow_page(request: Request, workflow_id: str) -> Response:
    return html(request, "workflow.html", workflow_context(runtime_of(request), workflow_id))


@router.get("/_/workflows/{workflow_id}")
@page_errors
def workflow_part(request: Request, workflow_id: str) -> Response:
    return html(request, "_workflow.html", workflow_context(runtime_of(request), workflow_id))


@router.get("/profiles")
@page_errors
def profiles_page(request: Request) -> Response:
    runtime = runtime_of(request)
    derived = runtime.derived
    return html(
        request,
        "profiles.html",
        {
            "views": profiles.views(runtime),
            "policy_path": derived.policy.path,
            "recent": profiles.RECENT,
            "min_samples": profiles.MIN_SAMPLES,
            "long_after": derived.policy.routing.long_after,
            "visibility": derived.visibility_timeout,
            "visibility_reason": derived.visibility_reason,
        },
    )


def workers_context(runtime: Runtime) -> dict[str, Any]:
    return {
        "workers": queries.workers(runtime.store),
        "within_s": queries.LIVE_WITHIN_MS // 1000,
        "now": now_ms(),
    }


@router.get("/workers")
@page_errors
def workers_page(request: Request) -> Response:
    return html(request, "workers.html", workers_context(runtime_of(request)))


@router.get("/_/workers")
@page_errors
def workers_part(request: Request) -> Response:
    return html(request, "_workers.html", workers_context(runtime_of(request)))
