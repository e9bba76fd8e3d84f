"""Every error the API answers, in one table: router errors to status codes.

Errors are JSON ``{"detail": ...}``: a message, or for an invalid request (422) the list
of problems, each with its location (``["body", "args", 0]``, ``["query", "limit"]``). The
last-resort handler turns anything else into a JSON 500 and logs the traceback; the
routes are written so that it never fires (the schemathesis run checks that).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from taskrouter import codec
from taskrouter.errors import (
    BackendUnavailable,
    BudgetExceeded,
    DamagedRecord,
    InvalidQuery,
    JobNotFound,
    JobStateConflict,
    PayloadError,
    TaskNotRegistered,
    TaskrouterError,
)
from taskrouter.settings import MAX_WORKFLOW_DEPTH

log = logging.getLogger("taskrouter.api")

# The first class in an error's MRO that is listed decides its status.
STATUS: dict[type[TaskrouterError], int] = {
    TaskNotRegistered: 404,
    JobNotFound: 404,
    JobStateConflict: 409,
    DamagedRecord: 409,
    PayloadError: 422,
    InvalidQuery: 422,
    BudgetExceeded: 429,
    BackendUnavailable: 503,
}
RETRY_AFTER = "5"  # seconds; a hint to clients of an unreachable engine


def status_of(exc: TaskrouterError) -> int | None:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def on_taskrouter_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskrouterError)
    status = status_of(exc)
    if status is None:
        return await on_unexpected(request, exc)
    if isinstance(exc, InvalidQuery):
        return error(422, [{"loc": ["query", exc.name], "msg": str(exc), "type": "value_error"}])
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    if isinstance(exc, BudgetExceeded):  # when the next budget window opens
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_in)))}
    return error(status, str(exc), headers)


async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI's own handler echoes each bad input back ("input"), which for a large body
    # is most of it; the location and the message are what a client needs.
    issues = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    body_issue = any(i["loc"][:1] == ["body"] for i in issues)
    if body_issue and not _is_json(request.headers.get("content-type", "")):
        # FastAPI parses a body as JSON only when it says so (a browser's cross-site form
        # post cannot); otherwise the complaint would be about the body's shape.
        issues.insert(
            0,
            {
                "loc": ["header", "content-type"],
                "msg": "send the body as JSON, with Content-Type: application/json",
                "type": "content_type",
            },
        )
    return error(422, issues)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI's answer to a JSON body it failed to parse for a reason other than its
        # syntax (not UTF-8, nested too deeply): for the contract, an invalid body.
        cause = type(exc.__cause__).__name__
        msg = f"the body could not be read as JSON ({cause})"
        if isinstance(exc.__cause__, RecursionError):
            msg = (
                "the body is nested too deeply to read: taskrouter takes at most "
                f"{codec.MAX_DEPTH} levels of lists and objects in one argument, and a "
                f"workflow nests at most {MAX_WORKFLOW_DEPTH} levels"
            )
        return error(422, [{"loc": ["body"], "msg": msg, "type": "json_invalid"}])
    return error(exc.status_code, exc.detail, dict(exc.headers) if exc.headers else None)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error(500, f"internal error ({type(exc).__name__}); see the server log")


def install(app: FastAPI) -> None:
    """Register the handler table on ``app``."""
    app.add_exception_handler(TaskrouterError, on_taskrouter_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
