"""Adaptive routing's pure parts: routing.adaptive in the policy file, percentiles of a
sketch, the lanes and queues an adaptive profile uses, and the advice of policy advise."""

from __future__ import annotations

from typing import Any

import pytest

from taskrouter.derive import celery_profiles, derive, engine_queues, lane_queues
from taskrouter.errors import PolicyError
from taskrouter.observed import Figures, advise, candidate_lanes, lane_queue, percentile
from taskrouter.policy import Adaptive, Policy
from taskrouter.policy_file import parse_policy

HEAD = "version: 1\nrouting:\n  long_after: 30s\n"
PROFILES = """\
profiles:
  chat: {expected_latency: 100ms, kind: io, queue: chat}
  crunch: {expected_latency: 2m, timeout: 10m}
  fixed: {expected_latency: 100ms, backend: celery}
"""


def policy(adaptive: str = "  adaptive: true\n", profiles: str = PROFILES) -> Policy:
    return parse_policy(HEAD + adaptive + profiles, "p.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("  adaptive: false\n", None),
        ("  adaptive: true\n", Adaptive()),
        ("  adaptive: {min_samples: 5}\n", Adaptive(min_samples=5)),
        ("  adaptive: {band: 10%, dwell: 30s}\n", Adaptive(band=0.1, dwell=30.0)),
        ("  adaptive: {band: 0}\n", Adaptive(band=0.0)),
    ],
)
def test_routing_adaptive_is_read(text: str, expected: Adaptive | None) -> None:
    assert policy(text).routing.adaptive == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  adaptive: yes please\n", "p.yaml:4: routing.adaptive: expected true, false or a"),
        (
            "  adaptive: {min_samples: 0}\n",
            "min_samples: must be a whole number >= 1",
        ),
        ("  adaptive: {band: 100%}\n", "routing.adaptive.band: expected a fraction"),
        ("  adaptive: {band: true}\n", "routing.adaptive.band: expected a fraction"),
        ("  adaptive: {dwell: soon}\n", "routing.adaptive.dwell:"),
        ("  adaptive: {dwel: 1m}\n", "did you mean 'dwell'?"),
    ],
)
def test_bad_routing_adaptive_names_the_line_and_key(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy(text)
    assert message in str(err.value)


def test_percentile_is_nearest_rank_in_seconds() -> None:
    assert percentile([], 90) == 0.0
    assert percentile([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000], 90) == 0.9
    assert percentile([5000] + [10] * 9, 90) == 0.01
    assert percentile([5000] + [10] * 8, 90) == 5.0
    fig = Figures.of([1000, 2000, 3000, 4000])
    assert (fig.count, fig.p50, fig.p90, fig.p95) == (4, 2.0, 4.0, 4.0)


def test_adaptive_profiles_are_served_on_both_their_lanes() -> None:
    p = policy()
    chat, crunch, fixed = (p.profiles[n] for n in ("chat", "crunch", "fixed"))
    assert candidate_lanes(chat, p.routing) == ("prefork", "io")
    assert candidate_lanes(crunch, p.routing) == ("prefork", "fork")
    assert candidate_lanes(fixed, p.routing) == ("prefork",)
    # One Celery queue cannot serve two Celery lanes: the io lane's is its own.
    assert lane_queue(chat, p.routing, "prefork") == "chat"
    assert lane_queue(chat, p.routing, "io") == "chat-io"
    assert lane_queue(crunch, p.routing, "prefork") == "crunch"
    derived = derive(p)
    assert lane_queues(derived, "prefork") == ["chat", "crunch", "fixed"]
    assert lane_queues(derived, "io") == ["chat-io"]
    assert lane_queues(derived, "fork") == ["crunch"]
    assert engine_queues(derived, "celery") == ["chat", "chat-io", "crunch", "fixed"]
    # crunch may run on Celery's prefork lane: its time limit counts in the window.
    assert [q.name for q in celery_profiles(p)] == ["chat", "crunch", "fixed"]
    assert derived.visibility_timeout > 1200


def test_without_adaptive_nothing_changes() -> None:
    derived = derive(policy(""))
    assert lane_queues(derived, "prefork") == ["chat", "fixed"]
    assert lane_queues(derived, "io") == []
    assert lane_queues(derived, "fork") == ["crunch"]


def test_advice_names_the_edit_when_observation_disagrees() -> None:
    p = policy("")  # advice does not need routing.adaptive
    chat, crunch, fixed = (p.profiles[n] for n in ("chat", "crunch", "fixed"))
    long = advise(chat, p.routing, Figures(count=40, p50=38.0, p90=41.2, p95=44.0))
    assert (long.observed_decision.backend, long.observed_decision.lane) == ("celery", "io")
    assert long.edit == "profiles.chat.expected_latency: 100ms -> 42s"
    assert long.to_dict()["line"] == 5
    assert advise(crunch, p.routing, Figures(40, 100.0, 130.0, 140.0)).edit == ""
    short = advise(crunch, p.routing, Figures(40, 0.5, 2.134, 3.0))
    assert short.edit == "profiles.crunch.expected_latency: 2m -> 2.2s"
    explicit = advise(fixed, p.routing, Figures(40, 50.0, 60.0, 70.0))
    assert (
        explicit.edit == "profiles.fixed.expected_latency: 100ms -> 1m and remove backend: celery"
    )
    none = advise(chat, p.routing, Figures(0, 0.0, 0.0, 0.0))
    assert (none.observed_decision, none.edit) == (None, "")


def test_a_route_the_policy_cannot_serve_is_ignored() -> None:
    from taskrouter.backends.adaptive import routed_settings

    derived = derive(policy())
    chat = derived.profiles["chat"]  # kind: io, lanes prefork and io
    lanes = {"prefork": "chat", "io": "chat-io"}
    moved = routed_settings(chat, {"lane": "io", "backend": "celery", "reason": "why"}, lanes)
    assert (moved.backend, moved.lane, moved.queue, moved.rule, moved.reason) == (
        "celery",
        "io",
        "chat-io",
        "observed",
        "why",
    )
    # Written while chat was kind: cpu: RQ would hold its jobs where no worker looks.
    assert routed_settings(chat, {"lane": "fork", "backend": "rq", "queue": "chat"}, lanes) is chat
    assert routed_settings(chat, {}, lanes) is chat


def test_explain_says_how_an_adaptive_profile_is_routed() -> None:
    from taskrouter.explain import render_explain

    text = render_explain(derive(policy("  adaptive: {min_samples: 7}\n")), "chat")
    assert (
        "adaptive          routed by its observed p90 after 7 runs (band 25%, dwell 10m); "
        "served on prefork (queue chat), io (queue chat-io)"
    ) in text
    assert "adaptive" not in render_explain(derive(policy()), "fixed")


class _Recorder:
    def __init__(self, name: str, sent: list[tuple[str, str, str]]) -> None:
        self.name, self.sent = name, sent

    def send(self, job_id: str, dispatch: int, settings: Any, **options: Any) -> None:
        self.sent.append((self.name, settings.backend, settings.queue))

    def close(self) -> None:
        pass


def test_a_retry_goes_to_the_engine_its_record_names() -> None:
    """A job that adaptive routing sent to Celery is retried on Celery, though the policy
    declares its profile long (RQ): its record says where it was sent."""
    from taskrouter.backends.runtime import Runtime
    from taskrouter.settings import Settings

    runtime = Runtime(Settings(key_prefix="unit-never-connects"), derive(policy()))
    sent: list[tuple[str, str, str]] = []
    for engine in ("celery", "rq"):
        runtime.install_backend(engine, _Recorder(engine, sent))  # type: ignore[arg-type]
    assert runtime.send_released("j1", "celery", "crunch", "2", "crunch")
    assert runtime.send_released("j2", "celery", "chat-io", "2", "chat")
    assert sent == [("celery", "celery", "crunch"), ("celery", "celery", "chat-io")]


def test_advise_renders_a_row_per_profile_and_per_task_and_the_edits() -> None:
    from taskrouter.services.advise import render

    derived = derive(policy(""))
    empty = {"count": 0, "p50": 0.0, "p90": 0.0, "p95": 0.0}
    seen: dict[str, Any] = {
        name: {
            "expected_latency": p.expected_latency,
            "observed": empty,
            "observed_backend": None,
            "observed_lane": None,
            "edit": "",
            "line": p.line,
            "tasks": [],
            "adaptive": None,
        }
        for name, p in derived.policy.profiles.items()
    }
    seen["chat"].update(
        observed={"count": 40, "p50": 38.0, "p90": 41.2, "p95": 44.0},
        observed_backend="celery",
        observed_lane="io",
        edit="profiles.chat.expected_latency: 100ms -> 42s",
        tasks=[
            {"task": "a.ask", "count": 36, "p50": 40.0, "p90": 41.2, "p95": 44.0},
            {"task": "a.ping", "count": 4, "p50": 0.05, "p90": 0.05, "p95": 0.05},
        ],
    )
    lines = render(derived, seen).splitlines()
    assert lines[0].split()[:5] == ["profile", "declared", "runs", "p50", "p95"]
    row = ["chat", "100ms", "40", "38s", "44s", "celery", "(prefork)", "celery", "(io)"]
    assert lines[1].split() == row
    assert lines[2].split() == ["a.ask", "36", "40s", "44s"]
    assert lines[3].split() == ["a.ping", "4", "50ms", "50ms"]
    assert lines[4].split() == ["crunch", "2m", "0", "-", "-", "rq", "(fork)", "-"]
    assert lines[-1] == "edit p.yaml:5: profiles.chat.expected_latency: 100ms -> 42s"


def test_check_names_the_adaptive_profiles() -> None:
    from taskrouter.explain import render_check

    last = render_check(derive(policy())).splitlines()[-1]
    assert last.startswith("routing.adaptive: chat, crunch go where their observed p90 says")
    assert "50 runs (band 25%, dwell 10m)" in last
    assert "routing.adaptive" not in render_check(derive(policy("")))


def test_a_queue_of_an_adaptive_profile_gets_prefetch_1() -> None:
    from taskrouter.derive import prefetch_multiplier

    assert prefetch_multiplier(derive(policy("")), ["chat"]) == 4  # 100 ms declared
    assert prefetch_multiplier(derive(policy()), ["chat"]) == 1
    assert prefetch_multiplier(derive(policy()), ["fixed"]) == 4  # backend: celery
