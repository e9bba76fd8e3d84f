from __future__ import annotations

import dataclasses
import math

import pytest

from taskrouter.classify import Decision, Observed, classify
from taskrouter.policy import Adaptive, BackendChoice, Kind, Profile, Routing, Shape, WorkflowMode

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


# -- rule "observed": routing.adaptive --------------------------------------------------

ADAPTIVE = Routing(long_after=30.0, adaptive=Adaptive(min_samples=10, band=0.25, dwell=60.0))
ALL = frozenset({"prefork", "fork", "io"})
NO_RQ = frozenset({"prefork", "io"})
INF = math.inf


def kinded(latency: float, kind: Kind = "cpu", backend: BackendChoice = "auto") -> Profile:
    return Profile(name="p", expected_latency=latency, kind=kind, backend=backend)


@pytest.mark.parametrize(
    ("latency", "kind", "p90", "count", "long", "since", "live", "lane", "rule", "fragment"),
    [
        # fewer runs than min_samples: declared latency decides, and says why
        (0.1, "cpu", 41.0, 9, None, INF, ALL, "prefork", "latency", "9 runs, fewer than the 10"),
        # declared short, observed long: RQ (cpu) or the I/O lane (io)
        (
            0.1,
            "cpu",
            41.0,
            500,
            None,
            INF,
            ALL,
            "fork",
            "observed",
            "observed p90 41s over 500 runs >= long_after 30s",
        ),
        (0.1, "io", 41.0, 500, None, INF, ALL, "io", "observed", "the I/O lane"),
        (0.1, "cpu", 30.0, 10, None, INF, ALL, "fork", "observed", ">= long_after 30s"),
        # declared short, observed short: stays
        (
            0.1,
            "cpu",
            29.0,
            500,
            None,
            INF,
            ALL,
            "prefork",
            "observed",
            "29s over 500 runs < long_after 30s",
        ),
        # declared long, observed short below the band: back to prefork
        (
            60.0,
            "cpu",
            22.0,
            500,
            None,
            INF,
            ALL,
            "prefork",
            "observed",
            "22s over 500 runs < 22.5s (long_after 30s less the 25% band)",
        ),
        # long (by a switch), p90 inside the band: stays long
        (
            0.1,
            "cpu",
            25.0,
            500,
            True,
            3600.0,
            ALL,
            "fork",
            "observed",
            "within the band 22.5s to 30s",
        ),
        (0.1, "cpu", 22.5, 500, True, 3600.0, ALL, "fork", "observed", "stays long"),
        # short by a switch, observed long again
        (60.0, "cpu", 31.0, 500, False, 3600.0, ALL, "fork", "observed", ">= long_after"),
        # dwell: a switch 10 s ago holds the profile where it is
        (
            0.1,
            "cpu",
            1.0,
            500,
            True,
            10.0,
            ALL,
            "fork",
            "observed",
            "within routing.adaptive.dwell 1m",
        ),
        (0.1, "cpu", 41.0, 500, False, 59.0, ALL, "prefork", "observed", "last switch was 59s ago"),
        (0.1, "cpu", 1.0, 500, True, 60.0, ALL, "prefork", "observed", "< 22.5s"),
        # no live worker of the target lane: stays
        (
            0.1,
            "cpu",
            41.0,
            500,
            None,
            INF,
            NO_RQ,
            "prefork",
            "observed",
            "no fork lane worker is alive",
        ),
        (
            0.1,
            "io",
            41.0,
            500,
            None,
            INF,
            frozenset({"prefork"}),
            "prefork",
            "observed",
            "no io lane",
        ),
    ],
)
def test_observed_table(
    latency: float,
    kind: Kind,
    p90: float,
    count: int,
    long: bool | None,
    since: float,
    live: frozenset[str],
    lane: str,
    rule: str,
    fragment: str,
) -> None:
    seen = Observed(p90=p90, count=count, long=long, since=since, live=live)
    decision = classify(kinded(latency, kind), ADAPTIVE, seen)
    assert (decision.lane, decision.rule) == (lane, rule), decision.reason
    assert fragment in decision.reason


def test_observed_reason_reads_as_in_the_docs() -> None:
    decision = classify(kinded(0.1), ADAPTIVE, Observed(p90=41.0, count=500))
    assert decision == Decision(
        "rq",
        "observed",
        "observed p90 41s over 500 runs >= long_after 30s: long, isolated calls go to RQ's "
        "fork-per-job workers",
        "fork",
    )


@pytest.mark.parametrize(
    ("routing", "prof"),
    [
        (CELERY, kinded(0.1)),  # adaptive off
        (ADAPTIVE, kinded(0.1, backend="celery")),  # an explicit backend wins
        (ADAPTIVE, kinded(0.1, backend="rq")),
        (ADAPTIVE, Profile(name="p", expected_latency=0.1, shape="chain")),  # workflows
    ],
)
def test_observation_is_ignored_where_it_does_not_apply(routing: Routing, prof: Profile) -> None:
    assert classify(prof, routing, Observed(p90=600.0, count=10_000)) == classify(prof, routing)


def test_no_observation_is_the_declared_routing() -> None:
    assert classify(kinded(0.1), ADAPTIVE) == classify(kinded(0.1), CELERY)
