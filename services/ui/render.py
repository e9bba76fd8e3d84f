"""Templates and the filters they use. Autoescaping is on for every template, so any
value from a record (a task name, a result, an error message) is shown as text."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from taskrouter.job import iso

TEMPLATES = Path(__file__).with_name("templates")
CUT_AT = 2000  # characters of a pretty-printed value shown before "show all"


def ago(ms: float | str | None, now_ms: float | None = None) -> str:
    """``"3 s ago"``, ``"in 2 min"``: how far a time in ms is from now."""
    if ms in (None, ""):
        return ""
    now = time.time() * 1000 if now_ms is None else now_ms
    delta = (now - float(ms)) / 1000  # type: ignore[arg-type]
    text = seconds(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def seconds(value: float | None) -> str:
    """A duration for people: ``850 ms``, ``4.2 s``, ``20 s``, ``3 min 5 s``, ``2 h``."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.0f} s" if float(value).is_integer() else f"{value:.1f} s"
    units = [(86400, "d"), (3600, "h"), (60, "min"), (1, "s")]
    parts, rest = [], int(value)
    for size, name in units:
        if rest >= size:
            parts.append(f"{rest // size} {name}")
            rest %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def between(start: float | str | None, end: float | str | None) -> str:
    if start in (None, "") or end in (None, ""):
        return ""
    return seconds(max(0.0, (float(end) - float(start)) / 1000))  # type: ignore[arg-type]


def when(ms: float | str | None) -> str:
    """A time in ms as ``2026-12-02 15:04:05.123 UTC``."""
    text = iso(ms)
    return "" if text is None else text.replace("T", " ").replace("Z", " UTC")


def clock(ms: float) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%H:%M")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def cut(text: str, limit: int = CUT_AT) -> tuple[str, int]:
    """The first ``limit`` characters of ``text`` and how many were left out."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def number(value: int | float | None) -> str:
    return "" if value is None else f"{value:,}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=ago,
        seconds=seconds,
        between=between,
        when=when,
        clock=clock,
        pretty=pretty,
        number=number,
    )
    env.globals["cut"] = cut
    return env


ENV = _environment()


def html(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    """``template`` rendered with ``context``, plus what every page needs (the request's
    CSRF token, whether logging out is possible)."""
    session = request.state.ui_session
    full = {
        "request": request,
        "csrf": session.token,
        "secured": session.secured,
        "path": request.url.path,
        "bare": False,  # the login page: no navigation, no logout
        **context,
    }
    body = ENV.get_template(template).render(full)
    response = HTMLResponse(body, status_code=status)
    session.apply(response, request)
    return response
