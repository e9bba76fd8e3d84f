"""The dashboard's buttons (POST): log in and out, cancel and retry a job, the bulk
actions. Every form carries the session's CSRF token, checked before anything is done;
each action answers with a redirect to the page that shows its outcome."""

from __future__ import annotations

import hmac
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from taskrouter.backends.queries import InvalidQuery
from taskrouter.errors import BackendUnavailable, JobNotFound, JobStateConflict
from taskrouter.services.api import bulk
from taskrouter.services.api.deps import runtime_of

from .pages import failure_page
from .render import html
from .security import TOKEN_COOKIE, UI_PREFIX, clear_cookie, safe_next, set_cookie
from .session import checked_form, open_session, renew

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(open_session)])


def _refused(request: Request) -> Response:
    message = (
        "The form had expired or came from another page: nothing was done. "
        "Reload the page and try again."
    )
    return html(request, "error.html", {"heading": "Refused", "message": message}, status=403)


def _redirect(request: Request, location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    request.state.ui_session.apply(response, request)
    return response


# -- login ---------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    if not request.app.state.settings.api_token:
        return _redirect(request, target)  # no token: nothing to log in to
    return html(request, "login.html", {"next": target, "failed": False, "bare": True})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    token = request.app.state.settings.api_token
    target = safe_next(form.get("next"))
    if not token:
        return _redirect(request, target)
    if not hmac.compare_digest(form.get("token", "").encode(), token.encode()):
        return html(
            request, "login.html", {"next": target, "failed": True, "bare": True}, status=401
        )
    renew(request)  # a new session: forms shown before the login no longer work
    response = _redirect(request, target)
    set_cookie(response, request, TOKEN_COOKIE, token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    if await checked_form(request) is None:
        return _refused(request)
    response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303)
    clear_cookie(response, request, TOKEN_COOKIE)
    return response


# -- one job -------------------------------------------------------------------------------------


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str) -> Response:
    if await checked_form(request) is None:
        return _refused(request)
    runtime = runtime_of(request)
    try:
        await run_in_threadpool(runtime.cancel_job, job_id)
    except JobStateConflict:
        return _redirect(request, f"{UI_PREFIX}/jobs/{quote(job_id)}?done=not-cancelable")
    except (JobNotFound, BackendUnavailable) as exc:
        return failure_page(request, exc)
    return _redirect(request, f"{UI_PREFIX}/jobs/{quote(job_id)}?done=canceled")


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, job_id: str) -> Response:
    if await checked_form(request) is None:
        return _refused(request)
    runtime = runtime_of(request)
    try:
        new = await run_in_threadpool(runtime.retry_job, job_id)
    except JobStateConflict:
        return _redirect(request, f"{UI_PREFIX}/jobs/{quote(job_id)}?done=not-retryable")
    except (JobNotFound, BackendUnavailable) as exc:
        return failure_page(request, exc)
    return _redirect(request, f"{UI_PREFIX}/jobs/{quote(new.id)}?done=retried")


# -- bulk ----------------------------------------------------------------------------------------


@router.post("/bulk/{action}")
async def bulk_action(request: Request, action: str) -> Response:
    form = await checked_form(request)
    if form is None:
        return _refused(request)
    task, profile = form.get("task") or None, form.get("profile") or None
    if action not in ("cancel", "retry") or not (task or profile):
        problem = InvalidQuery("task", "a bulk action needs a task or a profile")
        return failure_page(request, problem)
    runtime = runtime_of(request)
    try:
        if action == "cancel":
            result = await run_in_threadpool(
                bulk.cancel_queued, runtime, task=task, profile=profile
            )
        else:
            result = await run_in_threadpool(bulk.retry_ended, runtime, task=task, profile=profile)
    except BackendUnavailable as exc:
        return failure_page(request, exc)
    query = {k: v for k, v in (("task", task), ("profile", profile)) if v}
    query.update(
        done=action,
        touched=str(result.touched),
        skipped=str(result.skipped),
        more=str(int(result.more)),
    )
    return _redirect(request, f"{UI_PREFIX}/jobs?{urlencode(query)}")
