"""Helpers every test module shares: waiting for a condition with a deadline, and a
clock that a test moves by hand."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Wait until predicate() is truthy and return it; fail the test naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Clock:
    """Milliseconds since the epoch, as ``JobStore(clock=...)`` wants them, moved forward
    by ``advance`` instead of by sleeping."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def advance(self, seconds: float) -> None:
        self.offset_ms += int(seconds * 1000)


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most (start, end) spans open at one instant: how many jobs ran at once."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
