from __future__ import annotations

import dataclasses

import pytest

from taskrouter.classify import Decision, classify
from taskrouter.policy import BackendChoice, Profile, Routing, Shape, WorkflowMode

CELERY = Routing(long_after=30.0, workflows="celery")
PER_STEP = Routing(long_after=30.0, workflows="per-step")


def profile(latency: float, shape: Shape = "isolated", backend: BackendChoice = "auto") -> Profile:
    return Profile(name="p", expected_latency=latency, shape=shape, backend=backend)


@pytest.mark.parametrize(
    ("latency", "shape", "backend", "workflows", "engine", "rule", "fragment"),
    [
        # explicit backend wins over every rule
        (600.0, "isolated", "celery", "celery", "celery", "explicit", "backend: celery is set"),
        (0.1, "isolated", "rq", "celery", "rq", "explicit", "backend: rq is set"),
        (0.1, "chord", "celery", "celery", "celery", "explicit", "backend: celery"),
        (0.1, "chain", "rq", "per-step", "rq", "explicit", "backend: rq"),
        # workflow shapes go to Celery when routing.workflows is celery, whatever the latency
        (600.0, "chain", "auto", "celery", "celery", "workflow", "shape chain"),
        (0.1, "group", "auto", "celery", "celery", "workflow", "shape group"),
        (3600.0, "chord", "auto", "celery", "celery", "workflow", "native Celery canvases"),
        # per-step: a workflow-shaped profile is routed by latency, and says so
        (600.0, "chain", "auto", "per-step", "rq", "latency", "routing.workflows: per-step"),
        (1.0, "chord", "auto", "per-step", "celery", "latency", "routed by its own latency"),
        # latency: at or above long_after goes to RQ
        (30.0, "isolated", "auto", "celery", "rq", "latency", "30s >= routing.long_after 30s"),
        (60.0, "isolated", "auto", "celery", "rq", "latency", "RQ's fork-per-job"),
        (29.999, "isolated", "auto", "celery", "celery", "latency", "< routing.long_after 30s"),
        (0.2, "isolated", "auto", "per-step", "celery", "latency", "200ms < routing.long_after"),
    ],
)
def test_classify_table(
    latency: float,
    shape: Shape,
    backend: BackendChoice,
    workflows: WorkflowMode,
    engine: str,
    rule: str,
    fragment: str,
) -> None:
    routing = Routing(long_after=30.0, workflows=workflows)
    decision = classify(profile(latency, shape, backend), routing)
    assert (decision.backend, decision.rule) == (engine, rule)
    assert fragment in decision.reason


def test_latency_reason_reads_as_in_the_docs() -> None:
    decision = classify(profile(60.0), CELERY)
    assert decision == Decision(
        "rq",
        "latency",
        "expected_latency 1m >= routing.long_after 30s: long, isolated calls go to RQ's "
        "fork-per-job workers",
    )


def test_isolated_reason_does_not_mention_workflows() -> None:
    assert "per-step" not in classify(profile(60.0), PER_STEP).reason


def test_long_after_is_read_from_routing() -> None:
    assert classify(profile(10.0), Routing(long_after=5.0)).backend == "rq"
    assert classify(profile(10.0), Routing(long_after=20.0)).backend == "celery"


def test_decision_is_frozen() -> None:
    decision = classify(profile(1.0), CELERY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.backend = "rq"  # type: ignore[misc]
