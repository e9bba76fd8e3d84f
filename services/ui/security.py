"""The dashboard's guards: the login cookie, CSRF tokens, and the headers of every page.

- Login: the bearer token itself, kept in the ``taskrouter_token`` cookie (HttpOnly,
  SameSite=Strict, Path=/ui, Secure over https). ``TokenAuth`` accepts that cookie only
  under ``/ui``: the JSON API still needs the Authorization header, so no API route can
  be driven by a cookie a browser sends on its own.
- CSRF: every state-changing form carries a hidden ``csrf`` field, checked before the
  action runs. The value is an HMAC of a random per-session nonce (the
  ``taskrouter_csrf`` cookie, renewed at each login) under a server secret: a page of
  another site can neither read the nonce nor compute the HMAC. The secret derives from
  ``TASKROUTER_API_TOKEN`` (so every API replica agrees), or is random per process when
  no token is set.
- Headers: a Content-Security-Policy of ``default-src 'self'`` without 'unsafe-inline'
  on every ``/ui`` answer, so markup inside a task's result or error can neither run a
  script nor load anything, even if it escaped the template's autoescaping.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UI_PREFIX = "/ui"
TOKEN_COOKIE = "taskrouter_token"
CSRF_COOKIE = "taskrouter_csrf"
CSRF_FIELD = "csrf"
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def under_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


class Csrf:
    """Signs and checks the per-session CSRF tokens."""

    def __init__(self, api_token: str | None) -> None:
        if api_token:
            self._key = hmac.new(api_token.encode(), b"taskrouter ui csrf", hashlib.sha256).digest()
        else:
            self._key = secrets.token_bytes(32)

    def token_for(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def valid(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.token_for(nonce), token)


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of the dashboard, never another site."""
    if not target:
        return UI_PREFIX
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not under_ui(parts.path) or "\\" in target:
        return UI_PREFIX
    return parts.path + (f"?{parts.query}" if parts.query else "")


class PageHeaders:
    """ASGI middleware: the security headers on every answer under /ui."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not under_ui(scope["path"]):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(UI_PREFIX + "/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, with_headers)
