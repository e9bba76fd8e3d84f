from __future__ import annotations

import pytest

from taskrouter.durations import format_duration, parse_duration, parse_rate
from taskrouter.policy import RateLimit


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("45s", 45.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("0s", 0.0),
        (" 30s ", 30.0),
        ("45", 45.0),  # a quoted number is seconds, like a bare one
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("-5s", "negative"),
        (-1, "negative"),
        (-0.5, "negative"),
        (True, "boolean"),
        (False, "boolean"),
        ("", "empty"),
        ("   ", "empty"),
        (None, "empty"),
        ("10x", "not a duration"),
        ("10 minutes", "not a duration"),
        ("1h30m", "not a duration"),
        ("ms", "not a duration"),
        ("1.2.3s", "not a duration"),
        (float("inf"), "not finite"),
        (float("nan"), "not finite"),
        ([1], "got list"),
    ],
)
def test_parse_duration_rejects_with_what_is_accepted(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    message = str(caught.value)
    assert fragment in message
    assert "250ms, 45s, 10m" in message  # every refusal says what would be accepted


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.2, "200ms"),
        (0.0005, "0.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (45, "45s"),
        (60, "1m"),
        (90, "90s"),
        (132.5, "132.5s"),
        (600, "10m"),
        (5400, "90m"),
        (3600, "1h"),
        (129600, "36h"),
        (86400, "1d"),
        (172800, "2d"),
    ],
)
def test_format_duration_uses_the_largest_whole_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 0.1, 0.3, 1.1, 35, 66, 132, 660, 1567.5, 1e-7, 100 / 3])
def test_format_duration_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan")])
def test_format_duration_rejects_what_is_not_a_duration(bad: float) -> None:
    with pytest.raises(ValueError):
        format_duration(bad)


@pytest.mark.parametrize(
    ("value", "count", "per", "text"),
    [
        ("60/m", 60, 60.0, "60/m"),
        ("10/s", 10, 1.0, "10/s"),
        ("1000/h", 1000, 3600.0, "1000/h"),
        ("5/d", 5, 86400.0, "5/d"),
        ("3/10s", 3, 10.0, "3/10s"),
        ("1/1.5m", 1, 90.0, "1/90s"),
        (" 60 / m ", 60, 60.0, "60/m"),
    ],
)
def test_parse_rate(value: str, count: int, per: float, text: str) -> None:
    rate = parse_rate(value)
    assert rate == RateLimit(count=count, per=per)
    assert str(rate) == text


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0/m", "at least 1"),
        ("3/0s", "zero period"),
        ("60", "not a rate"),
        ("60/x", "not a rate"),
        ("60/-1s", "not a rate"),
        ("-1/m", "not a rate"),
        ("1.5/m", "not a rate"),
        ("m/60", "not a rate"),
        (60, "got int"),
        (True, "got a boolean"),
    ],
)
def test_parse_rate_rejects(value: object, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_rate(value)
    assert fragment in str(caught.value)
    assert "60/m" in str(caught.value) or "at least 1" in str(caught.value)
