"""The dashboard: ``/ui``, server-rendered pages over the same reads as the JSON API.

``install(app)`` adds its routes, static files and page headers to the API's app;
``running(app, runtime)`` is the part of the API's lifespan it needs (the per-minute
samples of the event counters, see throughput.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from taskrouter.backends.runtime import Runtime

from . import actions, pages, throughput
from .security import Csrf, PageHeaders

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI) -> None:
    """Serve the dashboard from ``app``: its routes and static files."""
    app.state.ui_csrf = Csrf(app.state.settings.api_token)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


def add_headers(app: FastAPI) -> None:
    """The security headers of every /ui answer; added last, so that the token check's
    redirects and refusals get them too."""
    app.add_middleware(PageHeaders)


@asynccontextmanager
async def running(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
    async with throughput.sampling(runtime.store):
        yield


__all__ = ["add_headers", "install", "running"]
