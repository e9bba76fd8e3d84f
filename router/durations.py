"""Durations and rates as policies.yaml writes them: ``250ms``, ``45s``, ``10m``, ``2h``, ``1d``.

Everything inside taskrouter is in seconds (floats); these functions are the only place
where the human spelling is read or written, so the CLI, the error messages and the
README all agree on it.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from taskrouter.policy import RateLimit

# Seconds per unit, largest first: format_duration tries them in this order.
UNITS: dict[str, float] = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

ACCEPTED = "a number of seconds, or a number and a unit: 250ms, 45s, 10m, 1.5h, 2h, 1d"
ACCEPTED_RATE = "COUNT/PERIOD: 60/m, 10/s, 1000/h, 5/d or 3/10s"

_DURATION_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>ms|s|m|h|d)?")
_RATE_RE = re.compile(r"(?P<count>\d+)\s*/\s*(?P<period>\S+)")


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds: ``"250ms"``, ``"45s"``, ``"1.5h"``, ``"1d"``, or a number.

    Raises ValueError, with a message saying what is accepted, for negative numbers,
    booleans (YAML reads ``yes``/``on`` as true), empty strings and unknown units.
    """
    if isinstance(value, bool):
        # bool is an int subclass: without this, `timeout: yes` would mean one second.
        raise ValueError(f"expected a duration, got a boolean ({value}); use {ACCEPTED}")
    if isinstance(value, int | float):
        return _non_negative(float(value), repr(value))
    if value is None:
        # What YAML gives for `timeout:` with nothing after it.
        raise ValueError(f"expected a duration, got an empty value; use {ACCEPTED}")
    if not isinstance(value, str):
        raise ValueError(f"expected a duration, got {type(value).__name__}; use {ACCEPTED}")
    text = value.strip()
    if not text:
        raise ValueError(f"expected a duration, got an empty value; use {ACCEPTED}")
    if text.startswith("-"):
        raise ValueError(f"duration {value!r} is negative; use {ACCEPTED}")
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{value!r} is not a duration; use {ACCEPTED}")
    unit = match["unit"] or "s"
    # Decimal arithmetic so that every spelling format_duration writes reads back exactly.
    seconds = float(Decimal(match["number"]) * Decimal(repr(UNITS[unit])))
    return _non_negative(seconds, repr(value))


def _non_negative(seconds: float, shown: str) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"duration {shown} is not finite; use {ACCEPTED}")
    if seconds < 0:
        raise ValueError(f"duration {shown} is negative; use {ACCEPTED}")
    return seconds


def format_duration(seconds: float) -> str:
    """Return the shortest exact spelling that parse_duration reads back to ``seconds``.

    Below one second the unit is ``ms`` (``250ms``). From one second up, the value is
    written in the largest of ``d``, ``h``, ``m`` that makes it a whole number (``90m``,
    ``36h``, ``1d``), else in seconds, with decimals when needed (``45s``, ``1.5s``).
    """
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration: expected seconds >= 0")
    if seconds == 0:
        return "0s"
    # Decimal of the repr, not of the binary float: 0.1 must count as exactly 100ms.
    exact = Decimal(repr(float(seconds)))
    if seconds < 1:
        return f"{_in_unit(exact, 'ms')}ms"
    # Milliseconds are left out here: "1.5s" reads better than "1500ms".
    for unit in ("d", "h", "m"):
        count = _in_unit(exact, unit)
        if "." not in count:
            return f"{count}{unit}"
    return f"{_in_unit(exact, 's')}s"


def _in_unit(exact: Decimal, unit: str) -> str:
    """``exact`` seconds as a plain decimal number of ``unit``, without trailing zeros."""
    count = (exact / Decimal(repr(UNITS[unit]))).normalize()
    return f"{count:f}"


def parse_rate(value: object) -> RateLimit:
    """Return the RateLimit that ``"60/m"``, ``"10/s"``, ``"1000/h"`` or ``"3/10s"`` means.

    The part after the slash is a unit (one of it) or any duration accepted by
    parse_duration. Raises ValueError for anything else, a count below 1 or a zero period.
    """
    if not isinstance(value, str):
        shown = "a boolean" if isinstance(value, bool) else type(value).__name__
        raise ValueError(f"expected a rate, got {shown}; use {ACCEPTED_RATE}")
    match = _RATE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a rate; use {ACCEPTED_RATE}")
    count = int(match["count"])
    if count < 1:
        raise ValueError(f"rate {value!r} allows no job at all; the count must be at least 1")
    period_text = match["period"]
    # A bare unit ("60/m") means one of it; anything else must be a full duration.
    period = UNITS[period_text] if period_text in UNITS else _rate_period(value, period_text)
    if period <= 0:
        raise ValueError(f"rate {value!r} has a zero period; use {ACCEPTED_RATE}")
    return RateLimit(count=count, per=period)


def _rate_period(value: str, period_text: str) -> float:
    try:
        return parse_duration(period_text)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate; use {ACCEPTED_RATE}") from None
