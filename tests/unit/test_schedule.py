"""Periodic tasks: the pure tick arithmetic (router/schedule.py), the decision of each
janitor pass, and the ``schedules:`` section of policies.yaml (router/schedule_file.py)."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Iterator

import pytest

from taskrouter.errors import PolicyError
from taskrouter.policy_file import parse_policy
from taskrouter.schedule import Cron, Decision, Interval, Schedule, decide
from taskrouter.schedule_file import check_tasks

UTC = dt.UTC


def ms(text: str) -> int:
    """'2026-03-29T01:00Z' as ms since the epoch."""
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def utc(tick: int) -> str:
    return dt.datetime.fromtimestamp(tick / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def ticks(when: Cron | Interval, start: str, count: int) -> Iterator[str]:
    tick = ms(start)
    for _ in range(count):
        tick = when.next_after(tick)
        yield utc(tick)


# -- cron across daylight saving time (Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST,
#    2026-10-25 03:00 CEST -> 02:00 CET) ---------------------------------------------------

BERLIN = "Europe/Berlin"


def test_a_daily_time_skipped_by_the_spring_change_fires_at_the_change() -> None:
    # 02:30 does not exist on March 29: cron runs it at 03:00 CEST (01:00 UTC), then
    # 02:30 CEST (00:30 UTC) again from the next day.
    got = list(ticks(Cron("30 2 * * *", BERLIN), "2026-03-27T12:00Z", 4))
    assert got == [
        "2026-03-28T01:30Z",  # 02:30 CET
        "2026-03-29T01:00Z",  # 03:00 CEST, the change
        "2026-03-30T00:30Z",  # 02:30 CEST
        "2026-03-31T00:30Z",
    ]


def test_a_daily_time_repeated_by_the_autumn_change_fires_once() -> None:
    # 02:30 happens twice on October 25 (00:30 and 01:30 UTC): a fixed-hour job runs once,
    # at the first; croniter alone would give both.
    got = list(ticks(Cron("30 2 * * *", BERLIN), "2026-10-23T12:00Z", 4))
    assert got == [
        "2026-10-24T00:30Z",  # 02:30 CEST
        "2026-10-25T00:30Z",  # 02:30 CEST, the first of the two
        "2026-10-26T01:30Z",  # 02:30 CET
        "2026-10-27T01:30Z",
    ]


def test_an_hourly_job_fires_every_real_hour_across_both_changes() -> None:
    spring = list(ticks(Cron("0 * * * *", BERLIN), "2026-03-28T23:30Z", 3))
    assert spring == ["2026-03-29T00:00Z", "2026-03-29T01:00Z", "2026-03-29T02:00Z"]
    autumn = list(ticks(Cron("0 * * * *", BERLIN), "2026-10-24T22:30Z", 4))
    # 02:00 CEST and 02:00 CET are both hours that happened: both fire.
    assert autumn == [
        "2026-10-24T23:00Z",
        "2026-10-25T00:00Z",
        "2026-10-25T01:00Z",
        "2026-10-25T02:00Z",
    ]


def test_latest_at_agrees_with_next_after_across_the_change() -> None:
    cron = Cron("30 2 * * *", BERLIN)
    assert utc(cron.latest_at(ms("2026-10-25T01:45Z"))) == "2026-10-25T00:30Z"  # not 01:30
    assert utc(cron.latest_at(ms("2026-03-29T01:00Z"))) == "2026-03-29T01:00Z"  # inclusive
    assert utc(cron.latest_at(ms("2026-03-29T00:59Z"))) == "2026-03-28T01:30Z"


def test_the_same_expression_in_another_zone_fires_at_other_instants() -> None:
    assert list(ticks(Cron("0 9 * * 1-5", "America/New_York"), "2026-03-06T00:00Z", 3)) == [
        "2026-03-06T14:00Z",  # Friday, EST
        "2026-03-09T13:00Z",  # Monday, EDT (the US changed on March 8)
        "2026-03-10T13:00Z",
    ]


# -- intervals -------------------------------------------------------------------------------


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    every = Interval(90.0)
    assert every.next_after(0) == 90_000
    assert every.next_after(90_000) == 180_000  # strictly after
    assert every.latest_at(179_999) == 90_000
    assert every.latest_at(180_000) == 180_000  # at or before


# -- what one pass decides ---------------------------------------------------------------------


def schedule(missed: str = "run-once", seconds: float = 60.0) -> Schedule:
    return Schedule(name="s", task="t", when=Interval(seconds), missed=missed)  # type: ignore[arg-type]


M = 60_000  # one tick of schedule()


@pytest.mark.parametrize(
    ("missed", "last", "now", "expected"),
    [
        # first sight: the latest tick runs only if on time (within 30 s, half the gap)
        ("run-once", None, 10 * M + 5_000, Decision(10 * M, run=True)),
        ("run-once", None, 10 * M + 40_000, Decision(10 * M, run=False)),
        # the next tick, on time
        ("run-once", 9 * M, 10 * M + 5_000, Decision(10 * M, run=True)),
        ("skip", 9 * M, 10 * M + 5_000, Decision(10 * M, run=True)),
        # nothing due: taken already, or not yet come
        ("run-once", 10 * M, 10 * M + 59_000, None),
        ("skip", 10 * M, 10 * M + 1, None),
        # the next tick, late (every janitor was down at it)
        ("run-once", 9 * M, 10 * M + 40_000, Decision(10 * M, run=True, catch_up=True)),
        ("skip", 9 * M, 10 * M + 40_000, Decision(10 * M, run=False)),
        # five ticks missed: one catch-up job for the latest, or none
        ("run-once", 4 * M, 9 * M + 40_000, Decision(9 * M, run=True, catch_up=True)),
        ("skip", 4 * M, 9 * M + 40_000, Decision(9 * M, run=False)),
        # ticks missed, but the latest is on time: it runs either way, as itself for skip
        ("run-once", 4 * M, 9 * M + 1_000, Decision(9 * M, run=True, catch_up=True)),
        ("skip", 4 * M, 9 * M + 1_000, Decision(9 * M, run=True)),
    ],
)
def test_decide(missed: str, last: int | None, now: int, expected: Decision | None) -> None:
    assert decide(schedule(missed), last, now) == expected


def test_an_outage_of_five_ticks_makes_one_job_then_the_ticks_go_on() -> None:
    s = schedule("run-once", seconds=1.0)
    taken: list[Decision] = []
    last = 100_000
    for now in [*range(100_100, 102_000, 500), *range(107_300, 110_000, 500)]:
        d = decide(s, last, now)
        if d is not None:
            taken.append(d)
            last = d.tick
    jobs = [(d.tick, d.catch_up) for d in taken if d.run]
    assert jobs == [(101_000, False), (107_000, True), (108_000, False), (109_000, False)]


def test_a_pass_never_makes_more_than_one_job_whatever_the_gap() -> None:
    s = schedule("run-once", seconds=1.0)
    for now in range(0, 3_000_000, 77_777):
        d = decide(s, 0, now)
        assert d is None or d.tick == s.latest_at(now)


def test_grace_is_half_the_gap_between_ticks_within_bounds() -> None:
    assert schedule(seconds=1.0).grace_ms(0) == 1_000  # at least two janitor polls
    assert schedule(seconds=60.0).grace_ms(0) == 30_000
    assert schedule(seconds=86_400.0).grace_ms(0) == 60_000


# -- the schedules: section ------------------------------------------------------------------

BASE = """\
version: 1
profiles:
  reports: {expected_latency: 10s}
schedules:
"""


def parse(section: str) -> dict[str, Schedule]:
    body = textwrap.indent(textwrap.dedent(section), "  ")
    return dict(parse_policy(BASE + body, "p.yaml").schedules)


def problems(section: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse(section)
    return [str(p) for p in caught.value.problems]


def test_a_full_schedule_reads_back() -> None:
    got = parse(
        """\
        nightly:
          task: app.tasks.report
          cron: "30  2 * * *"
          timezone: Europe/Berlin
          args: [daily, 3]
          kwargs: {format: pdf}
          jitter: 30s
          missed: skip
        ping:
          task: app.tasks.ping
          every: 1m
        """
    )
    assert got["nightly"] == Schedule(
        name="nightly",
        task="app.tasks.report",
        when=Cron("30 2 * * *", "Europe/Berlin"),
        args=("daily", 3),
        kwargs={"format": "pdf"},
        jitter=30.0,
        missed="skip",
        line=5,
        task_line=6,
    )
    assert got["ping"].when == Interval(60.0)
    assert got["ping"].missed == "run-once"  # the default
    assert got["ping"].when.__str__() == "every 1m"


def test_no_section_means_no_schedules() -> None:
    assert parse_policy(BASE.replace("schedules:\n", ""), "p.yaml").schedules == {}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("a: {task: t, cron: '0 3 * *'}", "p.yaml:5: schedules.a.cron: '0 3 * *' has 4 fields"),
        ("a: {task: t, cron: '0 3 * * * *'}", "has 6 fields; a cron expression has 5"),
        ("a: {task: t, cron: '61 3 * * *'}", "p.yaml:5: schedules.a.cron: '61 3 * * *' is not"),
        ("a: {task: t, cron: '0 3 30 2 *'}", "schedules.a.cron: '0 3 30 2 *' never fires"),
        ("a: {task: t}", "p.yaml:5: schedules.a: needs cron: or every:"),
        ("a: {task: t, every: 1m, cron: '0 3 * * *'}", "schedules.a: has both cron and every"),
        ("a: {task: t, every: 500ms}", "schedules.a.every: 500ms is shorter than"),
        ("a: {task: t, every: 1m, timezone: UTC}", "schedules.a.timezone: applies to cron only"),
        (
            "a: {task: t, cron: '0 3 * * *', timezone: Europe/Berln}",
            "unknown time zone 'Europe/Berln': did you mean 'Europe/Berlin'?",
        ),
        ("a: {task: t, every: 1m, missed: once}", "schedules.a.missed: 'once' is not one of"),
        ("a: {task: t, every: 1m, misssed: skip}", "unknown key 'misssed': did you mean 'missed'?"),
        ("a: {every: 1m}", "p.yaml:5: schedules.a.task: is required"),
        ("a: {task: '', every: 1m}", "schedules.a.task: 'nothing' is not a task name"),
        ("a: {task: t, every: 1m, args: {x: 1}}", "schedules.a.args: must be a list"),
        ("a: {task: t, every: 1m, kwargs: [1]}", "schedules.a.kwargs: must be a mapping"),
        ("a: {task: t, every: 1m, jitter: 1m}", "schedules.a.jitter: 1m is not shorter than"),
        ("a b: {task: t, every: 1m}", "schedules.a b: invalid schedule name"),
        ("a: {task: t, every: 1m, args: [.nan]}", "p.yaml:5: schedules.a.args: argument 0 is"),
        ("a: {task: t, every: 1m, kwargs: {x: .inf}}", "schedules.a.kwargs: argument 'x' is"),
        ("a: {task: t, every: 1m, kwargs: {1: x}}", "schedules.a.kwargs.1: is not a Python"),
    ],
)
def test_bad_schedules_name_the_line_and_key(section: str, expected: str) -> None:
    found = problems(section)
    assert len(found) == 1, found
    assert expected in found[0], found[0]


def test_a_missing_task_is_reported_with_its_line_when_the_app_is_loaded() -> None:
    schedules = parse(
        """\
        nightly:
          every: 1h
          task: app.tasks.reprot
        """
    )
    check_tasks(schedules, "p.yaml", ["app.tasks.reprot"])
    with pytest.raises(PolicyError) as caught:
        check_tasks(schedules, "p.yaml", ["app.tasks.report", "app.tasks.ping"])
    assert str(caught.value) == (
        "p.yaml:7: schedules.nightly.task: no registered task 'app.tasks.reprot': did you "
        "mean 'app.tasks.report'? register it with @task in the app (--app), or fix the name"
    )


def test_the_readme_example_is_a_valid_section() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Periodic tasks", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(BASE.replace("schedules:\n", "") + example, "README.md")
    assert list(policy.schedules) == ["nightly-report", "refresh-cache"]
    assert policy.schedules["nightly-report"].when == Cron("30 2 * * *", "Europe/Berlin")


def test_policy_check_lists_the_schedules_after_the_profiles() -> None:
    from taskrouter.services.schedules import render_defined

    assert render_defined({}) == ""
    text = render_defined(
        parse(
            """\
            nightly: {task: app.report, cron: "30 2 * * *", timezone: Europe/Berlin}
            ping: {task: app.ping, every: 90s, missed: skip}
            """
        )
    )
    assert text.splitlines()[-2:] == [
        "  nightly: app.report, cron '30 2 * * *' (Europe/Berlin), missed: run-once",
        "  ping: app.ping, every 90s, missed: skip",
    ]
