"""The app factory: ``create_app(settings)`` builds the API; its lifespan opens and
closes the runtime (Redis and broker connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from taskrouter.backends.aio import AsyncRecords
from taskrouter.backends.runtime import Runtime
from taskrouter.services import ui
from taskrouter.settings import Settings

from . import bulk, docs, errors, health, jobs, metrics, profiles, schedules, workflows
from .auth import OPEN_PATHS, CrossSiteGuard, HostGuard, TokenAuth
from .limits import DEFAULT_MAX_BODY, BodyLimit
from .schemas import ErrorOut

TITLE = "taskrouter"
# Host values a token-less API answers when its caller names none: the loopback names,
# on any port. ``taskrouter api`` passes its own address and port (default_allowed_hosts).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
DESCRIPTION = (
    "Every job of both engines (Celery and RQ) through one API: submit, read, list, "
    "cancel and retry jobs (one or in bulk); the routing policy's profiles; health, "
    "readiness and metrics. A dashboard over the same reads is served at /ui."
)


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The API for ``settings``. With ``runtime`` given (tests), the caller owns it;
    otherwise the lifespan builds one from ``settings`` and closes it at shutdown.

    Without a token, only requests whose ``Host`` is in ``allowed_hosts`` are served
    (``host:port``, a bare host for any port, or ``*`` for all): see HostGuard. With a
    token, the token decides."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = Runtime.from_env(settings) if runtime is None else runtime
        # Build the store's client now: built lazily by the first requests, in several
        # pool threads at once, it could be used before its scripts are registered.
        rt.store.client  # noqa: B018
        app.state.runtime = rt
        app.state.records = AsyncRecords(rt.settings.redis_url, rt.store.keys)
        app.state.metrics = metrics.registry(rt)
        try:
            async with ui.running(app, rt):
                yield
        finally:
            await app.state.records.close()
            if owned:
                rt.close()

    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served by docs.install, from installed files rather than a CDN
        redoc_url=None,
        responses={401: {"model": ErrorOut, "description": "missing or wrong bearer token"}}
        if settings.api_token
        else None,
    )
    app.state.settings = settings
    for module in (bulk, jobs, workflows, profiles, schedules, health, metrics):
        app.include_router(module.router)
    ui.install(app)
    errors.install(app)
    docs.install(app)
    # Starlette runs the last added middleware first: the token (or, without one, the
    # Host check), then the cross-site guard, then the body limit (a body is read only
    # for an allowed caller).
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CrossSiteGuard)
    if settings.api_token:
        app.add_middleware(TokenAuth, token=settings.api_token)
    else:
        app.add_middleware(HostGuard, allowed=list(allowed_hosts))
    ui.add_headers(app)
    app.openapi = lambda: _openapi(app, bool(settings.api_token))  # type: ignore[method-assign]
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("taskrouter")
    except PackageNotFoundError:
        return "0"


def _openapi(app: FastAPI, secured: bool) -> dict[str, Any]:
    """FastAPI's schema, plus the bearer scheme that TokenAuth (a middleware, so unseen
    by FastAPI) enforces, so that docs and clients know to send the token."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    if secured:
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if path in OPEN_PATHS:
                    operation["security"] = []
                    operation["responses"].pop("401", None)
                else:
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
