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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taskrouter.durations import format_duration
from taskrouter.policy import LANE_ENGINE, Engine, Lane, Profile, Routing

Rule = Literal["explicit", "workflow", "latency"]
RULES: tuple[str, ...] = ("explicit", "workflow", "latency")
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


def classify(profile: Profile, routing: Routing) -> Decision:
    """Return the engine and lane for ``profile`` under ``routing``; a pure function."""
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
    return _by_latency(profile, routing)


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
