"""The jobs list's time range: ``since`` and ``until`` as a duration ago (``15m``,
``2h``) or an ISO 8601 time (UTC unless it names its offset)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from taskrouter.backends.queries import InvalidQuery
from taskrouter.durations import parse_duration


@dataclass(frozen=True, slots=True)
class TimeRange:
    since_ms: int | None
    until_ms: int | None
    relative_until: bool = False  # "until" moves with the clock ("5m" ago): still live


def parse_moment(text: str, name: str, now_ms: int) -> tuple[int, bool]:
    """Milliseconds since the epoch, and whether ``text`` was relative to now."""
    text = text.strip()
    try:
        return now_ms - int(parse_duration(text) * 1000), True
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(
            name, f"{text!r} is neither a duration ago (15m, 2h) nor a time (2026-12-02T15:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000), False


def parse_range(since: str | None, until: str | None, now_ms: int | None = None) -> TimeRange:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    start, _ = parse_moment(since, "since", now) if since else (None, False)
    end, relative = parse_moment(until, "until", now) if until else (None, False)
    if start is not None and end is not None and start > end:
        raise InvalidQuery("since", "is after until")
    return TimeRange(start, end, relative)
