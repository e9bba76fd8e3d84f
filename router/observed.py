"""Observed run times: percentiles of a profile's sketch, the lanes and queues an adaptive
profile may use, and the advice of ``taskrouter policy advise``. Pure: no I/O.

The sketch (kept by ``backends/lua/finish.lua``) is the run time, in ms, of each of a
profile's last ``RUNTIME_SKETCH_SIZE`` attempts that ended (succeeded, failed or to be
retried), newest first: fixed size, and as recent as the traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from taskrouter.classify import Decision, Observed, adaptive, classify
from taskrouter.durations import format_duration
from taskrouter.policy import Adaptive, Lane, Profile, Routing


def percentile(values_ms: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values_ms``, in seconds; 0
    for no values."""
    if not values_ms:
        return 0.0
    ordered = sorted(values_ms)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1] / 1000


@dataclass(frozen=True, slots=True)
class Figures:
    """A profile's observed run times, in seconds."""

    count: int
    p50: float
    p90: float
    p95: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Figures:
        return cls(
            len(values_ms),
            percentile(values_ms, 50),
            percentile(values_ms, 90),
            percentile(values_ms, 95),
        )


def candidate_lanes(profile: Profile, routing: Routing) -> tuple[Lane, ...]:
    """The lanes ``profile`` may run on: its own, or both of an adaptive profile's
    (Celery's prefork lane, and RQ or the I/O lane by its kind)."""
    if not adaptive(profile, routing):
        return (classify(profile, routing).lane,)
    return ("prefork", "io" if profile.kind == "io" else "fork")


def lane_queue(profile: Profile, routing: Routing, lane: Lane) -> str:
    """The queue ``profile`` uses on ``lane``: its queue, except that an adaptive
    ``kind: io`` profile on the Celery lane its expected_latency does not choose uses
    ``<queue>-<lane>`` (one Celery queue cannot be served by both Celery lanes)."""
    queue = profile.queue or profile.name
    if adaptive(profile, routing) and profile.kind == "io" and lane != _declared(profile, routing):
        return f"{queue}-{lane}"
    return queue


def _declared(profile: Profile, routing: Routing) -> Lane:
    return classify(profile, routing).lane


@dataclass(frozen=True, slots=True)
class Advice:
    """``taskrouter policy advise`` for one profile."""

    profile: str
    line: int | None  # where the profile starts in its file
    declared: float  # expected_latency, s
    figures: Figures
    declared_decision: Decision
    observed_decision: Decision | None  # None: no runs observed yet
    edit: str  # the policy edit to make, or "" when none is needed

    def to_dict(self) -> dict[str, object]:
        d = self.observed_decision
        return {
            "expected_latency": self.declared,
            "observed": {
                "count": self.figures.count,
                "p50": self.figures.p50,
                "p90": self.figures.p90,
                "p95": self.figures.p95,
            },
            "observed_backend": d.backend if d else None,
            "observed_lane": d.lane if d else None,
            "observed_reason": d.reason if d else None,
            "edit": self.edit,
            "line": self.line,
        }


def advise(profile: Profile, routing: Routing, figures: Figures) -> Advice:
    """What the observed figures say about ``profile``: the engine and lane they would
    choose (rule ``observed``, as if ``routing.adaptive`` were on with no switch yet),
    and the edit that makes the declared routing choose the same."""
    declared = classify(profile, routing)
    if figures.count == 0:
        return Advice(
            profile.name, profile.line, profile.expected_latency, figures, declared, None, ""
        )
    tuning = replace(routing.adaptive or Adaptive(), min_samples=1)
    as_auto = replace(profile, backend="auto", shape="isolated")
    seen = classify(
        as_auto, replace(routing, adaptive=tuning), Observed(figures.p90, figures.count)
    )
    edit = ""
    if profile.shape != "isolated" and routing.workflows == "celery":
        edit = ""  # workflows run as Celery canvases whatever their latency
    elif (seen.backend, seen.lane) != (declared.backend, declared.lane):
        where = f"profiles.{profile.name}"
        value = format_duration(_round_up(figures.p90))
        edit = f"{where}.expected_latency: {format_duration(profile.expected_latency)} -> {value}"
        if profile.backend != "auto":
            edit += f" and remove backend: {profile.backend}"
    return Advice(
        profile.name, profile.line, profile.expected_latency, figures, declared, seen, edit
    )


def _round_up(seconds: float) -> float:
    """Two significant digits, rounded up (2.134 s -> 2.2 s): a value a person writes."""
    if seconds <= 0:
        return 0.001
    digits = 1 - math.floor(math.log10(seconds))
    step = 10.0**-digits
    return round(math.ceil(round(seconds / step, 9)) * step, max(digits, 0))
