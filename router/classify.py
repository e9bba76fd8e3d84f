"""Which engine runs a profile's jobs, and why: the routing rules of policies.yaml.

Rules, first match wins:

1. ``explicit``: a profile's ``backend: celery`` or ``backend: rq`` is obeyed.
2. ``workflow``: with ``routing.workflows: celery``, a chain, group or chord profile
   goes to Celery, whose canvases run workflows natively.
3. ``latency``: ``expected_latency >= routing.long_after`` goes to RQ (a fresh forked
   process per job, so a long job cannot leak memory or state into the next one);
   shorter jobs go to Celery (prefork pool, far less overhead per task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from taskrouter.durations import format_duration
from taskrouter.policy import Engine, Profile, Routing

Rule = Literal["explicit", "workflow", "latency"]
RULES: tuple[str, ...] = ("explicit", "workflow", "latency")


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a profile's jobs go, the rule that decided it, and a sentence saying why."""

    backend: Engine
    rule: Rule
    reason: str


def classify(profile: Profile, routing: Routing) -> Decision:
    """Return the engine for ``profile`` under ``routing``; a pure function of both."""
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
    backend: Engine
    if profile.expected_latency >= routing.long_after:
        backend = "rq"
        jobs = "long, isolated calls" if isolated else "long steps"
        why = f"expected_latency {latency} >= routing.long_after {long_after}: {jobs} go to "
        why += "RQ's fork-per-job workers"
    else:
        backend = "celery"
        jobs = "short calls" if isolated else "short steps"
        why = f"expected_latency {latency} < routing.long_after {long_after}: {jobs} go to "
        why += "Celery's prefork workers, with little overhead per task"
    if not isolated:
        # Only reachable with workflows: per-step; say so, or the shape looks ignored.
        why = (
            f"shape {profile.shape} with routing.workflows: per-step: each step is routed "
            f"by its own latency; {why}"
        )
    return Decision(backend, "latency", why)
