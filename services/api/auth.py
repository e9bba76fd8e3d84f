"""Who may call the API: the bearer token, guards against cross-site browser requests
and DNS rebinding, and the rule about which addresses the API may bind.

With ``TASKROUTER_API_TOKEN`` set, every request except ``/healthz`` (a liveness probe
carries no secrets) needs ``Authorization: Bearer <token>``. It is checked in a plain
ASGI middleware, before routing or reading the body, so that an unauthenticated client
learns nothing (not even whether a path exists or a body parses).

The dashboard (``/ui``) also accepts the token from its login cookie, and only there:
every state-changing form of the dashboard carries a CSRF token (services/ui/security.py),
which API routes do not check. Its login page and static files need no token; any other
dashboard page sends a browser without one to the login page.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import quote

from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from taskrouter.errors import TaskrouterError

from .errors import error

OPEN_PATHS = frozenset({"/healthz"})
UI_PREFIX = "/ui"
UI_LOGIN = "/ui/login"
UI_STATIC = "/ui/static/"
UI_COOKIE = "taskrouter_token"  # services/ui/security.py sets it
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost"})


class TokenAuth:
    """ASGI middleware: 401 unless the request carries the bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("TokenAuth needs a non-empty token")
        self.app = app
        self._token = token.encode()

    def authorized(self, scope: Scope) -> bool:
        ui = _under_ui(scope["path"])
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                # compare_digest: the time taken does not tell how much of a guess matched.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
            if ui and name == b"cookie":
                cookie = cookie_parser(value.decode("latin-1")).get(UI_COOKIE)
                if cookie is not None:
                    return hmac.compare_digest(cookie.encode("latin-1", "replace"), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]) or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        if _under_ui(scope["path"]) and not _wants_fragment(scope):
            # A person at a browser: the login form, then back to the page they asked for.
            query = scope["query_string"].decode("latin-1")
            target = scope["path"] + (f"?{query}" if query else "")
            location = f"{UI_LOGIN}?next={quote(target, safe='')}"
            await RedirectResponse(location, status_code=303)(scope, receive, send)
            return
        response = error(
            401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="taskrouter"'}
        )
        await response(scope, receive, send)


def _under_ui(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path == UI_LOGIN or path.startswith(UI_STATIC)


def _wants_fragment(scope: Scope) -> bool:
    """The dashboard's own script asks for a part of a page: it gets a 401, and reloads."""
    return any(name == b"x-taskrouter-fragment" for name, _ in scope["headers"])


class CrossSiteGuard:
    """ASGI middleware: 403 for a state-changing request that a browser sent from a page
    of another site.

    Without a token, a web page could make the user's browser post a form to
    ``http://127.0.0.1:8000/jobs/<id>/cancel``: a form post needs no CORS preflight and
    cancel takes no body. Browsers mark such requests ``Sec-Fetch-Site: cross-site``;
    API clients (curl, httpx, requests) send no such header and are not affected.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            for name, value in scope["headers"]:
                if name == b"sec-fetch-site" and value not in (b"same-origin", b"none"):
                    response = error(403, "cross-site requests may not change jobs")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class HostGuard:
    """ASGI middleware: 421 for a request whose ``Host`` header names no allowed host.

    Without a token, a web page can still reach a local API through DNS rebinding: its
    own name, resolved again to 127.0.0.1, makes the browser send requests that are
    same-origin to it (no ``Sec-Fetch-Site: cross-site``) and carry ``Host: its.name``.
    Checking the Host against the names this server answers to refuses them. Entries are
    ``host:port``, or a bare host for any port; ``*`` allows every host.
    """

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(h.lower() for h in allowed)

    def allows(self, host: str) -> bool:
        host = host.strip().lower()
        name = host.rpartition(":")[0] if _has_port(host) else host
        return "*" in self.allowed or host in self.allowed or name in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        if len(hosts) == 1 and self.allows(hosts[0]):
            await self.app(scope, receive, send)
            return
        shown = hosts[0][:100] if hosts else "(none)"
        response = error(
            421,
            f"Host {shown!r} is not a name this API answers to without a token: use "
            "http://127.0.0.1:PORT or http://localhost:PORT, start the API with "
            "--allowed-host NAME, or set TASKROUTER_API_TOKEN",
        )
        await response(scope, receive, send)


def _has_port(host: str) -> bool:
    name, colon, port = host.rpartition(":")
    # "[::1]" has colons but no port; "[::1]:8000" and "localhost:8000" have one.
    return bool(colon) and port.isdigit() and (not name.startswith("[") or name.endswith("]"))


def default_allowed_hosts(host: str, port: int) -> list[str]:
    """The Host values of a token-less API bound to ``host``:``port``: that address and
    ``localhost`` (and, bound to ``localhost``, its loopback addresses), with the port.
    Port 0 (any free port) allows them on any port; port 80 also without one."""
    names = {host.lower(), "localhost"}
    if host.lower() == "localhost":
        names |= {"127.0.0.1", "::1"}
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    if port == 0:
        return sorted(names)
    allowed = {f"{n}:{port}" for n in names}
    return sorted(allowed | names if port == 80 else allowed)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve beyond this machine without a token, unless told ``insecure``."""
    if is_loopback(host) or token or insecure:
        return
    raise TaskrouterError(
        f"refusing to bind {host} without TASKROUTER_API_TOKEN: anyone who can reach it could "
        "submit and cancel jobs. Set TASKROUTER_API_TOKEN, bind 127.0.0.1, or pass --insecure "
        "(behind an authenticating proxy)"
    )
