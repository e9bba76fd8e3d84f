from __future__ import annotations

from pathlib import Path

import pytest

from taskrouter.derive import (
    Derived,
    celery_queues,
    derive,
    grace,
    io_concurrency,
    lane_queues,
    prefetch_multiplier,
    profile_visibility_need,
    rq_queues,
    time_limit,
    visibility_need,
    visibility_problems,
)
from taskrouter.errors import PolicyError
from taskrouter.policy import Policy, Profile, RateLimit, Retries, Routing
from taskrouter.policy_file import load_policy

REPO_POLICY = Path(__file__).resolve().parents[2] / "policies.yaml"


@pytest.fixture(scope="module")
def shipped() -> Derived:
    return derive(load_policy(REPO_POLICY))


def policy(*profiles: Profile, routing: Routing | None = None) -> Policy:
    return Policy(
        path="p.yaml", routing=routing or Routing(), profiles={p.name: p for p in profiles}
    )


@pytest.mark.parametrize(
    ("timeout", "expected_grace"),
    [
        (10.0, 5.0),  # 10% would be 1s: the 5s minimum applies
        (50.0, 5.0),
        (120.0, 12.0),  # 10%
        (123.0, 12.3),
        (600.0, 60.0),
        (3600.0, 60.0),  # 10% would be 6m: capped at 60s
    ],
)
def test_grace(timeout: float, expected_grace: float) -> None:
    assert grace(timeout) == pytest.approx(expected_grace)
    assert time_limit(timeout) == pytest.approx(timeout + expected_grace)


# Hand-computed from policies.yaml: (backend, lane, rule, soft, hard, job_timeout, keep,
# attempts, long_running)
SHIPPED = {
    "interactive": ("celery", "prefork", "latency", 30.0, 35.0, 30, 86400, 3, False),
    "default": ("celery", "prefork", "latency", 120.0, 132.0, 120, 86400, 1, True),
    "enrichment": ("celery", "io", "latency", 600.0, 660.0, 600, 86400, 4, True),
    "llm": ("celery", "io", "latency", 900.0, 960.0, 900, 86400, 3, True),
    "media": ("rq", "fork", "latency", 1800.0, 1860.0, 1800, 172800, 1, True),
    "flaky": ("celery", "prefork", "latency", 60.0, 66.0, 60, 86400, 3, True),
    "pipeline": ("celery", "prefork", "workflow", 300.0, 330.0, 300, 86400, 1, True),
    "fanout": ("celery", "prefork", "workflow", 600.0, 660.0, 600, 86400, 2, True),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_settings(shipped: Derived, name: str) -> None:
    s = shipped.profiles[name]
    actual = (
        s.backend,
        s.lane,
        s.rule,
        s.soft_time_limit,
        s.time_limit,
        s.job_timeout,
        s.keep_results,
        s.max_attempts,
        s.long_running,
    )
    assert actual == SHIPPED[name]
    assert s.profile == name
    assert s.queue == name
    assert s.reason


def test_shipped_caps_are_copied(shipped: Derived) -> None:
    enrichment = shipped.profiles["enrichment"]
    assert enrichment.concurrency == 8
    assert enrichment.rate_limit == RateLimit(60, 60.0)
    assert enrichment.retries == Retries(3, (10.0, 60.0, 300.0))
    assert shipped.profiles["default"].concurrency is None
    assert shipped.profiles["default"].rate_limit is None


def test_shipped_visibility_timeout(shipped: Derived) -> None:
    # fanout: time limit 660s x 2 + its chord backoff 5s + 100s sweep lag = 1425s;
    # margin 10% = 142.5s; 1567.5s rounded up.
    assert shipped.visibility_timeout == 1568
    reason = shipped.visibility_reason
    assert "660s (fanout) x 2" in reason
    assert "backoff 5s (fanout)" in reason
    assert "margin 142.5s" in reason
    assert "rounded up to 1568s" in reason


def test_shipped_queues(shipped: Derived) -> None:
    assert celery_queues(shipped) == ["default", "fanout", "flaky", "interactive", "pipeline"]
    assert rq_queues(shipped) == ["media"]
    assert lane_queues(shipped, "io") == ["enrichment", "llm"]
    assert io_concurrency(shipped, ["enrichment", "llm"]) == 8 + 4  # their global caps


def test_prefetch_multiplier(shipped: Derived) -> None:
    assert prefetch_multiplier(shipped, ["interactive"]) == 4  # 200ms tasks only
    assert prefetch_multiplier(shipped, ["interactive", "default"]) == 1
    assert prefetch_multiplier(shipped, ["pipeline"]) == 1
    # enrichment is long but runs in the I/O lane: it says nothing about prefork workers
    assert prefetch_multiplier(shipped, ["enrichment"]) == 4
    assert prefetch_multiplier(shipped, []) == 4


def test_shared_queue_takes_the_longest_profile() -> None:
    quick = Profile(name="quick", expected_latency=0.1, queue="shared")
    slow = Profile(name="slow", expected_latency=5.0, queue="shared")
    far = Profile(name="far", expected_latency=600.0, queue="shared")
    derived = derive(policy(quick, slow, far))
    assert prefetch_multiplier(derived, ["shared"]) == 1
    assert celery_queues(derived) == ["shared"]
    assert rq_queues(derived) == ["shared"]


def test_queue_defaults_to_the_profile_name() -> None:
    derived = derive(policy(Profile(name="solo", expected_latency=1.0)))
    assert derived.profiles["solo"].queue == "solo"


def test_fractional_values_round_up() -> None:
    p = Profile(name="p", expected_latency=1.0, timeout=123.0, keep_results=1.5)
    settings = derive(policy(p)).profiles["p"]
    assert settings.time_limit == pytest.approx(135.3)
    assert settings.job_timeout == 123
    assert settings.keep_results == 2


def test_visibility_floor() -> None:
    # 35s x 2 + 100s = 170s; margin 60s (10% is less) = 230s, below the 300s floor
    derived = derive(policy(Profile(name="p", expected_latency=0.1, timeout=30.0)))
    assert visibility_need(35.0, 0.0) == 230.0
    assert derived.visibility_timeout == 300
    assert "300s floor" in derived.visibility_reason


def test_no_celery_profile_uses_the_floor() -> None:
    derived = derive(policy(Profile(name="p", expected_latency=60.0, timeout=3600.0)))
    assert derived.visibility_timeout == 300
    assert "no profile routes to Celery" in derived.visibility_reason


def test_isolated_backoff_does_not_count_but_workflow_backoff_does() -> None:
    retries = Retries(max=1, backoff=(600.0,))
    isolated = Profile(name="iso", expected_latency=1.0, timeout=1000.0, retries=retries)
    chain = Profile(name="wf", expected_latency=1.0, shape="chain", timeout=1000.0, retries=retries)
    # 1060 x 2 + 100 = 2220, + 222 margin
    assert derive(policy(isolated)).visibility_timeout == 2442
    # 1060 x 2 + 600 + 100 = 2820, + 282 margin
    assert derive(policy(chain)).visibility_timeout == 3102
    assert profile_visibility_need(chain) == pytest.approx(3102.0)


def test_longest_time_limit_and_longest_backoff_may_come_from_different_profiles() -> None:
    long_one = Profile(name="long", expected_latency=1.0, timeout=1000.0)
    retried = Profile(
        name="wf",
        expected_latency=1.0,
        shape="group",
        timeout=10.0,
        retries=Retries(max=1, backoff=(600.0,)),
    )
    derived = derive(policy(long_one, retried))
    assert derived.visibility_timeout == 3102  # (1060 x 2 + 600 + 100) x 1.1
    assert "1060s (long)" in derived.visibility_reason
    assert "600s (wf)" in derived.visibility_reason


def test_rq_profiles_do_not_widen_the_window() -> None:
    short = Profile(name="short", expected_latency=0.1, timeout=30.0)
    huge = Profile(name="huge", expected_latency=3600.0, timeout=86400.0)
    assert derive(policy(short, huge)).visibility_timeout == 300


def test_configured_window_is_used_when_it_fits() -> None:
    routing = Routing(celery_visibility_timeout=4000.0)
    derived = derive(policy(Profile(name="p", expected_latency=1.0), routing=routing))
    assert derived.visibility_timeout == 4000
    assert "routing.celery_visibility_timeout" in derived.visibility_reason


def test_configured_window_too_short_is_refused() -> None:
    # timeout 5m: 330s x 2 + 100s = 760s, + 76s margin = 836s > 600s
    routing = Routing(celery_visibility_timeout=600.0)
    p = Profile(name="p", expected_latency=1.0, timeout=300.0, line=7)
    rq_one = Profile(name="r", expected_latency=3600.0, timeout=7200.0, line=9)
    problems = visibility_problems(policy(p, rq_one, routing=routing))
    assert [(x.line, x.key) for x in problems] == [(7, "profiles.p.timeout")]
    assert "at least 836s" in problems[0].message
    with pytest.raises(PolicyError) as caught:
        derive(policy(p, rq_one, routing=routing))
    assert str(caught.value).startswith("p.yaml:7: profiles.p.timeout: timeout 5m needs")


def test_visibility_problem_lines_can_be_given() -> None:
    routing = Routing(celery_visibility_timeout=600.0)
    p = Profile(name="p", expected_latency=1.0, timeout=300.0, line=7)
    problems = visibility_problems(policy(p, routing=routing), {"p": 12})
    assert problems[0].line == 12


def test_derived_settings_are_frozen(shipped: Derived) -> None:
    with pytest.raises(AttributeError):
        shipped.profiles["default"].queue = "other"  # type: ignore[misc]


def test_render_check_has_one_row_per_profile_and_the_window(shipped: Derived) -> None:
    from taskrouter.explain import render_check

    lines = render_check(shipped).splitlines()
    header = ["profile", "backend", "lane", "queue", "timeout", "retries", "reason"]
    assert lines[0].split() == header
    rows = {line.split()[0]: line.split() for line in lines[1:9]}
    assert list(rows) == list(SHIPPED)
    assert rows["enrichment"][1:7] == ["celery", "io", "enrichment", "10m", "3,", "backoff"]
    assert rows["media"][1:6] == ["rq", "fork", "media", "30m", "none"]
    assert rows["default"][1:6] == ["celery", "prefork", "default", "2m", "none"]
    assert lines[-1].startswith("Celery visibility timeout 1568s: time limit 660s (fanout)")


def test_render_explain_lists_every_derived_setting(shipped: Derived) -> None:
    from taskrouter.explain import render_explain

    text = render_explain(shipped, "enrichment")
    settings = {line.split()[0]: " ".join(line.split()[1:]) for line in text.splitlines()}
    assert settings["backend"] == "celery (rule: latency)"
    assert settings["lane"].startswith("io (the I/O lane")
    assert settings["in"].startswith("flight 8 calls per lane process")
    assert settings["reason"].startswith("expected_latency 1m >= routing.long_after 30s")
    assert settings["timeout"].startswith("10m ")
    assert settings["time_limit"].startswith("11m (timeout + 1m grace")
    assert settings["job_timeout"].startswith("600s ")
    assert settings["max_attempts"] == "4 (retries: 3, backoff 10s 1m 5m)"
    assert settings["keep_results"].startswith("1d ")
    assert settings["concurrency"].startswith("8 ")
    assert settings["rate_limit"].startswith("60/m ")
    media = render_explain(shipped, "media")
    assert "rq worker" in media and "fork (RQ" in media
    celery = render_explain(shipped, "interactive")
    assert "prefetch          4 per worker process" in celery
    assert "needs 230s" in celery
    with pytest.raises(KeyError, match="known profiles"):
        render_explain(shipped, "nope")
