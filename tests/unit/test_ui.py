"""The dashboard's pure parts: layout, chart, per-minute deltas, time ranges, formatting,
CSRF tokens, and the cookie rule of TokenAuth. No Redis."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from taskrouter.backends.queries import InvalidQuery
from taskrouter.job import Job
from taskrouter.services.api.auth import TokenAuth
from taskrouter.services.ui import chart, graph, profiles, render, security, throughput
from taskrouter.services.ui.throughput import Minute
from taskrouter.services.ui.timerange import parse_range

NOW = 1_764_000_000_000  # ms


def job(job_id: str, state: str = "queued", task: str = "t.x") -> Job:
    return Job(id=job_id, task=task, profile="p", backend="celery", queue="p", state=state)


# -- the workflow graph ------------------------------------------------------------------------


def test_a_chord_fans_its_header_into_the_body() -> None:
    jobs = [job("h1"), job("h2"), job("h3"), job("b", "scheduled")]
    links = {
        "h1": ("header 1", ["b"]),
        "h2": ("header 2", ["b"]),
        "h3": ("header 3", ["b"]),
        "b": ("body", []),
    }
    g = graph.layout(jobs, links)
    assert g is not None
    at = {b.job_id: (b.x, b.y) for b in g.boxes}
    assert at["h1"][0] == at["h2"][0] == at["h3"][0] < at["b"][0]
    assert at["h1"][1] < at["h2"][1] < at["h3"][1]
    assert at["b"][1] == at["h2"][1]  # centred on its header
    assert len(g.edges) == 3
    assert {b.label for b in g.boxes} == {"header 1", "header 2", "header 3", "body"}


def test_a_chain_runs_left_to_right_and_a_group_stacks() -> None:
    chain = graph.layout(
        [job("a"), job("b"), job("c")],
        {"a": ("step 1", ["b"]), "b": ("step 2", ["c"]), "c": ("step 3", [])},
    )
    assert chain is not None
    assert len({b.y for b in chain.boxes}) == 1
    assert [b.job_id for b in sorted(chain.boxes, key=lambda b: b.x)] == ["a", "b", "c"]
    group = graph.layout([job("a"), job("b")], {"a": ("member 1", []), "b": ("member 2", [])})
    assert group is not None and len({b.x for b in group.boxes}) == 1 and not group.edges


def test_an_expired_member_is_drawn_and_a_huge_workflow_is_not() -> None:
    g = graph.layout([job("a", state="")], {})
    assert g is not None and g.boxes[0].state == "expired"
    many = [job(str(i)) for i in range(graph.MAX_DRAWN + 1)]
    assert graph.layout(many, {}) is None


# -- the chart and its figures -----------------------------------------------------------------


def test_minute_deltas_come_from_consecutive_samples() -> None:
    samples = {
        10: {"submitted": 5, "succeeded": 1, "failed": 0},
        11: {"submitted": 9, "succeeded": 4, "failed": 1},
        13: {"submitted": 20, "succeeded": 10, "failed": 1},
    }
    live = {"submitted": 25, "succeeded": 12, "failed": 3}
    got = throughput.deltas(samples, live, [10, 11, 12, 13], now_minute=13)
    assert got[10] == {"submitted": 4, "succeeded": 3, "failed": 1}
    assert got[11] is None  # no sample at 12: unknown, not zero
    assert got[12] is None
    assert got[13] == {"submitted": 5, "succeeded": 2, "failed": 2}  # runs to now
    reset = throughput.deltas(samples, {"submitted": 0, "succeeded": 0, "failed": 0}, [13], 13)
    assert reset[13] == {"submitted": 0, "succeeded": 0, "failed": 0}


def test_totals_sum_every_label_and_ignore_other_fields() -> None:
    counters = {
        "submitted|a|celery|a|t.x": "3",
        "submitted|b|rq|b|t.y": "2",
        "succeeded|a|celery|a|t.x": "4",
        "retried|a|celery|a|t.x": "7",
        "junk": "x",
    }
    assert throughput.totals(counters) == {"submitted": 5, "succeeded": 4, "failed": 0}


def test_the_chart_draws_gaps_and_a_round_axis() -> None:
    minutes = [
        Minute(NOW + i * 60_000, submitted=i, succeeded=None if i in (2, 3) else i, failed=0)
        for i in range(6)
    ]
    c = chart.build(minutes)
    lines = {line.name: line for line in c.lines}
    assert len(lines["submitted"].paths) == 1
    assert len(lines["succeeded"].paths) == 2  # split by the two unknown minutes
    assert lines["submitted"].total == 15 and lines["succeeded"].total == 0 + 1 + 4 + 5
    assert [t.label for t in c.y_ticks][-1] == "8"
    assert len(c.columns) == 6 and "no samples" in c.columns[2][2]
    assert chart.nice_top(0) == 4 and chart.nice_top(9) == 20 and chart.nice_top(41) == 80


# -- profiles: observed against declared -------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert profiles.percentile(values, 0.5) == 50.0
    assert profiles.percentile(values, 0.95) == 95.0
    assert profiles.percentile([], 0.5) is None


@pytest.mark.parametrize(
    ("expected", "runs", "flagged"),
    [
        (0.1, [0.1] * 10, []),
        (0.1, [45.0] * 10, ["long (RQ by the rules)", "p95 is over"]),
        (60.0, [0.5] * 10, ["short (Celery by the rules)", "p50 is under"]),
        (0.1, [45.0] * 3, []),  # too few runs to say anything
        (0.1, [0.001] * 10, []),  # a short task that runs shorter changes nothing
    ],
)
def test_run_times_that_disagree_with_the_policy_are_flagged(
    expected: float, runs: list[float], flagged: list[str]
) -> None:
    seen = profiles.judge(expected, 30.0, runs)
    assert len(seen.flags) == len(flagged)
    for flag, text in zip(seen.flags, flagged, strict=True):
        assert text in flag


# -- time ranges and formatting ----------------------------------------------------------------


def test_time_ranges_take_durations_ago_and_iso_times() -> None:
    r = parse_range("15m", None, now_ms=NOW)
    assert r.since_ms == NOW - 15 * 60_000 and r.until_ms is None
    r = parse_range("2025-11-24T16:00:00Z", "2025-11-24T17:00", now_ms=NOW)
    assert r.until_ms is not None and r.since_ms is not None
    assert r.until_ms - r.since_ms == 3_600_000  # no offset given: UTC
    assert parse_range(None, "5m", now_ms=NOW).relative_until
    with pytest.raises(InvalidQuery, match="neither a duration"):
        parse_range("yesterday", None, now_ms=NOW)
    with pytest.raises(InvalidQuery, match="after until"):
        parse_range("1m", "1h", now_ms=NOW)


def test_durations_and_cuts_for_people() -> None:
    assert render.seconds(0.25) == "250 ms"
    assert render.seconds(4.25) == "4.2 s"
    assert render.seconds(20) == "20 s"
    assert render.seconds(60) == "1 min"
    assert render.seconds(3725) == "1 h 2 min"
    assert render.ago(NOW - 3000, NOW) == "3 s ago"
    assert render.cut("x" * 10, 4) == ("xxxx", 6)
    assert render.cut("short") == ("short", 0)


def test_templates_escape_every_value() -> None:
    template = render.ENV.from_string("<p>{{ value }}</p>")
    assert template.render(value="<script>alert(1)</script>") == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    )


# -- CSRF and the login cookie -----------------------------------------------------------------


def test_csrf_tokens_are_bound_to_the_nonce_and_the_secret() -> None:
    csrf = security.Csrf("api-token")
    token = csrf.token_for("nonce-1")
    assert csrf.valid("nonce-1", token)
    assert not csrf.valid("nonce-2", token)
    assert not csrf.valid("nonce-1", None) and not csrf.valid(None, token)
    assert not security.Csrf("other-token").valid("nonce-1", token)
    assert security.Csrf("api-token").valid("nonce-1", token)  # every replica agrees


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/ui/jobs?state=failed", "/ui/jobs?state=failed"),
        ("https://evil.example/ui", "/ui"),
        ("//evil.example/ui", "/ui"),
        ("/jobs", "/ui"),
        ("/ui\\@evil", "/ui"),
        (None, "/ui"),
    ],
)
def test_after_login_only_dashboard_paths(target: str | None, safe: str) -> None:
    assert security.safe_next(target) == safe


def _guarded() -> TestClient:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [
        Route(p, ok, methods=["GET", "POST"]) for p in ("/ui", "/ui/jobs", "/jobs", "/ui/login")
    ]
    app: Any = TokenAuth(Starlette(routes=routes), token="tok")
    return TestClient(app)


def test_the_login_cookie_works_under_ui_only() -> None:
    client = _guarded()
    cookie = {"Cookie": f"{security.TOKEN_COOKIE}=tok"}
    assert client.get("/ui/jobs", headers=cookie).text == "ok"
    assert client.get("/jobs", headers=cookie).status_code == 401  # the API needs the header
    assert client.get("/jobs", headers={"Authorization": "Bearer tok"}).text == "ok"
    wrong = {"Cookie": f"{security.TOKEN_COOKIE}=nope"}
    r = client.get("/ui/jobs?state=failed", headers=wrong, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3Dfailed"
    fragment = client.get("/ui/jobs", headers={**wrong, "X-Taskrouter-Fragment": "1"})
    assert fragment.status_code == 401
    assert client.get("/ui/login").text == "ok"  # the login form needs no token
