"""Which engine and lane run a profile's jobs, and why: the routing rules of policies.yaml.

Rules, first match wins:

1. ``explicit``: a profile's ``backend: celery`` or ``backend: rq`` is obeyed (Celery's
   prefork lane, RQ's fork per job).
2. ``workflow``: with ``routing.workflows: celery``, a chain, group or chord profile
   goes to Celery's prefork lane, whose canvases run workflows natively.
3. ``latency``: ``expected_latency >= routing.long_after`` is long. A long ``kind: io``
   profile (it waits on the network: LLM and HTTP calls) goes to the I/O lane, where one
   process holds thousands of waiting calls; a long ``kind: cpu`` one (the default: it
   parses, renders, holds memory) goes to RQ (a fresh forked process per job, so a long
   job cannot leak memory or state into the next one). Shorter jobs go to Celery's
   prefork pool (far less overhead per task).

With ``routing.adaptive`` on, a ``backend: auto`` profile of shape ``isolated`` is
routed instead by ``observed`` (rule ``observed``, between 2 and 3) once it has
``min_samples`` runs: long when its observed p90 run time is ``>= long_after``, short
again only when the p90 falls below ``long_after`` x (1 - ``band``), and never within
``dwell`` of the last switch or onto a lane with no live worker. Fewer runs: rule 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from taskrouter.durations import format_duration
from taskrouter.policy import LANE_ENGINE, LANES, Adaptive, Engine, Lane, Profile, Routing

Rule = Literal["explicit", "workflow", "observed", "latency"]
RULES: tuple[str, ...] = ("explicit", "workflow", "observed", "latency")
_DEFAULT_LANE: dict[str, Lane] = {"celery": "prefork", "rq": "fork"}


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a profile's jobs go, the rule that decided it, and a sentence saying why."""

    backend: Engine
    rule: Rule
    reason: str
    lane: Lane = field(default="prefork")

    def __post_init__(self) -> None:
        if LANE_ENGINE[self.lane] != self.backend:  # the engine's own lane unless told
            object.__setattr__(self, "lane", _DEFAULT_LANE[self.backend])


@dataclass(frozen=True, slots=True)
class Observed:
    """What the finish script measured for a profile, and where observation put it.

    ``long``: the class the last switch chose (None: never switched), ``since``: seconds
    since that switch, ``live``: the lanes that have a live worker now.
    """

    p90: float
    count: int
    long: bool | None = None
    since: float = math.inf
    live: frozenset[str] = frozenset(LANES)


def adaptive(profile: Profile, routing: Routing) -> bool:
    """Whether ``profile`` may be routed by its observed run times."""
    return (
        routing.adaptive is not None and profile.backend == "auto" and profile.shape == "isolated"
    )


def classify(profile: Profile, routing: Routing, observed: Observed | None = None) -> Decision:
    """Return the engine and lane for ``profile`` under ``routing`` (and, with
    ``routing.adaptive``, its ``observed`` run times); a pure function."""
    if profile.backend == "celery" or profile.backend == "rq":
        return Decision(
            profile.backend,
            "explicit",
            f"backend: {profile.backend} is set in the profile; an explicit choice wins "
            "over the routing rules",
        )
    if profile.shape != "isolated" and routing.workflows == "celery":
        return Decision(
            "celery",
            "workflow",
            f"shape {profile.shape} with routing.workflows: celery: workflows run as "
            "native Celery canvases",
        )
    if observed is not None and routing.adaptive is not None and adaptive(profile, routing):
        return _by_observation(profile, routing, routing.adaptive, observed)
    return _by_latency(profile, routing)


def _where(long: bool, kind: str) -> tuple[Engine, Lane, str]:
    if not long:
        return "celery", "prefork", "short calls go to Celery's prefork workers"
    if kind == "io":
        return "celery", "io", "long calls that wait on the network go to the I/O lane"
    return "rq", "fork", "long, isolated calls go to RQ's fork-per-job workers"


def _by_observation(
    profile: Profile, routing: Routing, tuning: Adaptive, seen: Observed
) -> Decision:
    if seen.count < tuning.min_samples:
        d = _by_latency(profile, routing)
        why = f"{d.reason} (observed: {seen.count} runs, fewer than the {tuning.min_samples} "
        why += "that routing.adaptive needs)"
        return Decision(d.backend, "latency", why, d.lane)
    declared = profile.expected_latency >= routing.long_after
    current = declared if seen.long is None else seen.long
    long_after, low = routing.long_after, routing.long_after * (1 - tuning.band)
    p90 = f"observed p90 {format_duration(seen.p90)} over {seen.count} runs"
    la = f"long_after {format_duration(long_after)}"
    if seen.p90 >= long_after:
        want, why = True, f"{p90} >= {la}"
    elif not current:
        want, why = False, f"{p90} < {la}"
    elif seen.p90 < low:
        want, why = False, f"{p90} < {format_duration(low)} ({la} less the {tuning.band:.0%} band)"
    else:
        want = True
        why = f"{p90} is within the band {format_duration(low)} to {format_duration(long_after)}"
        why += " (routing.adaptive.band): stays long"
    if want != current and seen.since < tuning.dwell:
        why += f", but the last switch was {format_duration(seen.since)} ago, within "
        why += f"routing.adaptive.dwell {format_duration(tuning.dwell)}: stays where it is"
        want = current
    backend, lane, tail = _where(want, profile.kind)
    if want != current and lane not in seen.live:
        why += f", but no {lane} lane worker is alive: stays where it is"
        want = current
        backend, lane, tail = _where(want, profile.kind)
    return Decision(backend, "observed", f"{why}: {tail}", lane)


def _by_latency(profile: Profile, routing: Routing) -> Decision:
    latency = format_duration(profile.expected_latency)
    long_after = format_duration(routing.long_after)
    isolated = profile.shape == "isolated"
    jobs = "calls" if isolated else "steps"
    backend: Engine
    lane: Lane
    if profile.expected_latency < routing.long_after:
        backend, lane = "celery", "prefork"
        why = f"expected_latency {latency} < routing.long_after {long_after}: short {jobs} "
        why += "go to Celery's prefork workers, with little overhead per task"
    elif profile.kind == "io":
        backend, lane = "celery", "io"
        why = f"expected_latency {latency} >= routing.long_after {long_after} and kind: io: "
        why += f"long {jobs} that wait on the network go to the I/O lane, where one process "
        why += "holds thousands of them"
    else:
        backend, lane = "rq", "fork"
        what = "long, isolated calls" if isolated else "long steps"
        why = f"expected_latency {latency} >= routing.long_after {long_after}: {what} go to "
        why += "RQ's fork-per-job workers"
    if not isolated:
        # Only reachable with workflows: per-step; say so, or the shape looks ignored.
        why = (
            f"shape {profile.shape} with routing.workflows: per-step: each step is routed "
            f"by its own latency; {why}"
        )
    return Decision(backend, "latency", why, lane)
