"""The app factory: ``create_app(settings)`` builds the API; its lifespan opens and
closes the runtime (Redis and broker connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from taskrouter.backends.aio import AsyncRecords
from taskrouter.backends.runtime import Runtime
from taskrouter.settings import Settings

from . import docs, errors, health, jobs, metrics, profiles, workflows
from .auth import OPEN_PATHS, CrossSiteGuard, TokenAuth
from .limits import DEFAULT_MAX_BODY, BodyLimit
from .schemas import ErrorOut

TITLE = "taskrouter"
DESCRIPTION = (
    "Every job of both engines (Celery and RQ) through one API: submit, read, list, "
    "cancel and retry jobs; the routing policy's profiles; health, readiness and metrics."
)


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The API for ``settings``. With ``runtime`` given (tests), the caller owns it;
    otherwise the lifespan builds one from ``settings`` and closes it at shutdown."""

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
    for module in (jobs, workflows, profiles, health, metrics):
        app.include_router(module.router)
    errors.install(app)
    docs.install(app)
    # Starlette runs the last added middleware first: the token, then the cross-site
    # guard, then the body limit (a body is read only for an allowed caller).
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CrossSiteGuard)
    if settings.api_token:
        app.add_middleware(TokenAuth, token=settings.api_token)
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
