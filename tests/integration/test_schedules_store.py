"""The schedules' passes (backends/periodic.py) in this process, on a real Redis, with a
clock the test moves: jitter, both missed-tick policies, and a slower janitor's pass."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.integration.periodic_app  # noqa: F401 - registers the schedules' task
from taskrouter.backends.periodic import Periodic
from taskrouter.backends.runtime import Runtime
from taskrouter.derive import derive
from taskrouter.policy_file import parse_policy
from taskrouter.settings import Settings
from tests.helpers import Clock

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
profiles:
  periodic: {expected_latency: 1s, backend: rq}
schedules:
  catch-up:
    task: tests.periodic.beat
    every: 10s
    args: [a]
    jitter: 4s
  skipping:
    task: tests.periodic.beat
    every: 10s
    args: [b]
    missed: skip
"""


@pytest.fixture
def clock() -> Clock:
    found = Clock()
    # Just after a tick of both schedules (multiples of 10 s).
    found.offset_ms = 10_000 - found() % 10_000 + 100
    return found


@pytest.fixture
def runtime(redis_url: str, key_prefix: str, clock: Clock) -> Iterator[Runtime]:
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix)
    found = Runtime(settings, derive(parse_policy(POLICY, "p.yaml")), engines=())
    found.store.clock = clock
    try:
        yield found
    finally:
        found.close()


def jobs(runtime: Runtime, schedule: str) -> list[dict[str, str]]:
    store = runtime.store
    ids = store.client.zrange(store.keys.index_of("task", "tests.periodic.beat"), 0, -1)
    records = [store.read(i) for i in ids]
    return sorted(
        (r for r in records if r and r["schedule"] == schedule), key=lambda r: int(r["tick"])
    )


def test_each_tick_once_with_its_jitter_then_one_catch_up_or_none(
    runtime: Runtime, clock: Clock
) -> None:
    first = clock() // 10_000 * 10_000
    periodic = Periodic(runtime)
    assert len(periodic.run()) == 2  # first sight, on time: both run their tick
    assert periodic.run() == []  # nothing new until the next tick
    # A second janitor's pass over the same tick makes nothing more.
    assert Periodic(runtime).run() == []
    clock.advance(10)
    assert len(periodic.run()) == 2

    runs = jobs(runtime, "catch-up")
    assert [int(r["tick"]) for r in runs] == [first, first + 10_000]
    for record in runs:
        # Scheduled (its engine's workers send it), due within the jitter after its tick.
        assert record["state"] == "scheduled"
        assert int(record["tick"]) <= int(record["due_at"]) <= int(record["tick"]) + 4_000
        assert record["catch_up"] == "0"

    clock.advance(45)  # every janitor down for 4 ticks; the latest is 5.1 s late
    done = {name: (d.tick, d.run, d.catch_up, bool(job)) for name, d, job in periodic.run()}
    latest = first + 50_000
    assert done == {
        "catch-up": (latest, True, True, True),  # one job for the five ticks
        "skipping": (latest, False, False, False),  # past its grace (half the gap): none
    }
    assert [int(r["tick"]) for r in jobs(runtime, "catch-up")][-1] == latest
    assert jobs(runtime, "catch-up")[-1]["catch_up"] == "1"


def test_skip_drops_the_ticks_of_an_outage(runtime: Runtime, clock: Clock) -> None:
    first = clock() // 10_000 * 10_000
    periodic = Periodic(runtime)
    periodic.run()
    clock.advance(37)  # the latest tick is 7 s late: more than half the 10 s gap
    done = {name: (d.tick, d.run, d.catch_up) for name, d, _ in periodic.run()}
    assert done == {
        "catch-up": (first + 30_000, True, True),
        "skipping": (first + 30_000, False, False),
    }
    assert [int(r["tick"]) for r in jobs(runtime, "skipping")] == [first]
    state = runtime.store.client.hgetall(runtime.store.keys.periodic("skipping"))
    assert int(state["last_tick"]) == first + 30_000  # passed, so not taken again
    assert int(state["last_run_tick"]) == first  # the last tick that made a job


def test_a_late_mark_never_moves_a_schedule_back(runtime: Runtime, clock: Clock) -> None:
    store = runtime.store
    assert store.run("periodic_mark", "catch-up", 20_000, "job-b", 1) == 1
    assert store.run("periodic_mark", "catch-up", 10_000, "job-a", 2) == 0
    state = store.client.hgetall(store.keys.periodic("catch-up"))
    assert (state["last_tick"], state["last_job"], state["last_run"]) == ("20000", "job-b", "1")
