"""Per-request dashboard session: the CSRF nonce cookie, and the forms checked against it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from .security import CSRF_COOKIE, CSRF_FIELD, Csrf, new_nonce, set_cookie


@dataclass(slots=True)
class Session:
    nonce: str
    token: str
    fresh: bool  # a new nonce: its cookie goes out with the response
    secured: bool  # the API has a token: there is a login, and a logout

    def apply(self, response: Response, request: Request) -> None:
        if self.fresh:
            set_cookie(response, request, CSRF_COOKIE, self.nonce)


def csrf_of(request: Request) -> Csrf:
    csrf: Csrf = request.app.state.ui_csrf
    return csrf


def open_session(request: Request) -> Session:
    """A router dependency: every dashboard route has ``request.state.ui_session``."""
    csrf = csrf_of(request)
    nonce = request.cookies.get(CSRF_COOKIE)
    fresh = not nonce
    if not nonce:
        nonce = new_nonce()
    session = Session(
        nonce=nonce,
        token=csrf.token_for(nonce),
        fresh=fresh,
        secured=bool(request.app.state.settings.api_token),
    )
    request.state.ui_session = session
    return session


def renew(request: Request) -> Session:
    """A new nonce (at login): tokens of forms shown before no longer work."""
    session: Session = request.state.ui_session
    session.nonce = new_nonce()
    session.token = csrf_of(request).token_for(session.nonce)
    session.fresh = True
    return session


async def checked_form(request: Request) -> dict[str, str] | None:
    """The form's fields (the first value of each), or None when its CSRF token is not
    this session's."""
    body = (await request.body()).decode("utf-8", "replace")
    fields = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    nonce = request.cookies.get(CSRF_COOKIE)
    if not csrf_of(request).valid(nonce, fields.get(CSRF_FIELD)):
        return None
    return fields
