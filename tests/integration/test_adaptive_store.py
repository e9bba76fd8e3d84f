"""The scripts and reads of adaptive routing on a real Redis: the run time sketches kept
by finish.lua, one switch however many janitors judge, no switch to a lane nobody
serves, and the route that enqueuing processes read."""

from __future__ import annotations

import time

import pytest
import redis

from taskrouter.backends import adaptive
from taskrouter.backends.heartbeats import WorkerInfo
from taskrouter.backends.store import JobStore
from taskrouter.derive import derive
from taskrouter.policy_file import parse_policy
from taskrouter.settings import RUNTIME_SKETCH_SIZE
from tests.helpers import Clock
from tests.integration.test_store import create_job, history, token

pytestmark = pytest.mark.integration

POLICY = parse_policy(
    """\
version: 1
routing: {long_after: 1s, adaptive: {min_samples: 3, band: 50%, dwell: 10s}}
profiles:
  p: {expected_latency: 100ms}
  fixed: {expected_latency: 100ms, backend: celery}
"""
)
PREFORK = WorkerInfo(engine="celery", name="celery@h:1", lane="prefork", queues=("p", "fixed"))
FORK = WorkerInfo(engine="rq", name="rq@h:2", lane="fork", queues=("p",))
BOTH = [PREFORK, FORK]


class Frozen(Clock):
    """A clock that moves only when told: run times are exact."""

    def __init__(self) -> None:
        super().__init__()
        self.base = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.base + self.offset_ms


@pytest.fixture
def clock() -> Clock:
    return Frozen()


def run_job(store: JobStore, clock: Clock, seconds: float, profile: str = "p") -> str:
    job_id = create_job(store, profile=profile, task="t.work")
    tok = token()
    assert store.claim(job_id, 1, "w1", tok, 60_000).status == "ok"
    clock.advance(seconds)
    assert store.finish(job_id, tok, "succeeded", "1", history=history()) == ("ok", "succeeded")
    return job_id


def test_finish_puts_the_run_time_in_the_profile_and_task_sketches(
    store: JobStore, clock: Clock, r: redis.Redis
) -> None:
    run_job(store, clock, 2.5)
    run_job(store, clock, 0.25)
    assert r.lrange(store.keys.runtimes("p"), 0, -1) == ["250", "2500"]  # newest first
    assert r.lrange(store.keys.task_runtimes("p", "t.work"), 0, -1) == ["250", "2500"]
    assert r.smembers(store.keys.runtime_tasks("p")) == {"t.work"}
    assert r.pttl(store.keys.runtimes("p")) > 0


def test_a_finish_that_lost_its_job_records_no_run_time(
    store: JobStore, clock: Clock, r: redis.Redis
) -> None:
    job_id = create_job(store, profile="p", task="t.work")
    assert store.claim(job_id, 1, "w1", token(), 60_000).status == "ok"
    assert store.finish(job_id, "another", "succeeded", "1", history=history())[0] == "lost"
    assert r.llen(store.keys.runtimes("p")) == 0


def test_the_sketch_keeps_its_size(store: JobStore, clock: Clock, r: redis.Redis) -> None:
    for _ in range(4):
        job_id = create_job(store, profile="p", task="t.work")
        tok = token()
        store.claim(job_id, 1, "w1", tok, 60_000)
        clock.advance(1)
        store.run("finish", job_id, tok, clock(), "succeeded", "1", 0, "{}", "none", 0, 3, 60_000)
    assert r.llen(store.keys.runtimes("p")) == 3
    assert RUNTIME_SKETCH_SIZE >= 100


def test_one_switch_however_many_janitors_judge(
    store: JobStore, clock: Clock, r: redis.Redis
) -> None:
    for _ in range(3):
        run_job(store, clock, 2.0)
    first = adaptive.adapt(store, POLICY, lambda: BOTH)
    second = adaptive.adapt(store, POLICY, lambda: BOTH)
    assert [(s.profile, s.old_lane, s.decision.lane) for s in first] == [("p", "prefork", "fork")]
    assert second == []
    route = r.hgetall(store.keys.route("p"))
    assert (route["backend"], route["lane"], route["queue"], route["switches"]) == (
        "rq",
        "fork",
        "p",
        "1",
    )
    assert route["reason"].startswith("observed p90 2s over 3 runs >= long_after 1s: ")
    counters = r.hgetall(store.keys.counters())
    assert counters == {**counters, "switched_to_fork|p|rq|p|": "1"}


def test_a_stale_route_is_not_switched_again(store: JobStore, r: redis.Redis) -> None:
    args = ("rq", "fork", "p", 1, 1000, "why", 2000, 3)
    assert store.run("route_switch", "p", "", *args) == 1
    assert store.run("route_switch", "p", "", *args) == 0  # read before the first switch
    assert store.run("route_switch", "p", "1000", *args) == 1
    assert r.hget(store.keys.route("p"), "switches") == "2"


def test_no_switch_to_a_lane_without_a_live_worker_of_its_queue(
    store: JobStore, clock: Clock
) -> None:
    for _ in range(3):
        run_job(store, clock, 2.0)
    elsewhere = WorkerInfo(engine="rq", name="rq@h:3", lane="fork", queues=("other",))
    assert adaptive.adapt(store, POLICY, lambda: [PREFORK, elsewhere]) == []
    assert [s.decision.lane for s in adaptive.adapt(store, POLICY, lambda: BOTH)] == ["fork"]


def test_dwell_holds_a_switch_then_lets_it_go_back(store: JobStore, clock: Clock) -> None:
    for _ in range(3):
        run_job(store, clock, 2.0)
    assert len(adaptive.adapt(store, POLICY, lambda: BOTH)) == 1
    for _ in range(40):
        run_job(store, clock, 0.01)  # p90 10 ms, but the switch was 0.4 s ago
    assert adaptive.adapt(store, POLICY, lambda: BOTH) == []
    clock.advance(10)
    back = adaptive.adapt(store, POLICY, lambda: BOTH)
    assert [(s.old_lane, s.decision.lane) for s in back] == [("fork", "prefork")]


def test_enqueuers_read_the_route_at_most_once_a_ttl(store: JobStore, clock: Clock) -> None:
    derived = derive(POLICY)
    now = [0.0]
    routes = adaptive.Routes(store, derived, ttl=1.0, clock=lambda: now[0])
    p, fixed = derived.profiles["p"], derived.profiles["fixed"]
    assert routes.reads("p") and not routes.reads("fixed")
    assert routes.settings(p) == p
    assert not routes.reads("p")  # cached for a ttl: the API plans it on its loop
    for _ in range(3):
        run_job(store, clock, 2.0)
    adaptive.adapt(store, POLICY, lambda: BOTH)
    assert routes.settings(p) == p  # cached
    now[0] = 1.0
    assert routes.reads("p")
    moved = routes.settings(p)
    assert (moved.backend, moved.lane, moved.queue, moved.rule) == ("rq", "fork", "p", "observed")
    assert moved.time_limit == p.time_limit
    assert routes.settings(fixed) is fixed  # not adaptive: never read


def test_a_route_this_policy_cannot_serve_counts_as_no_switch(
    store: JobStore, clock: Clock, r: redis.Redis
) -> None:
    # Written when p was kind: io (lane io), a moment ago: no dwell holds it now.
    r.hset(store.keys.route("p"), mapping={"lane": "io", "since_ms": clock(), "long": "1"})
    for _ in range(3):
        run_job(store, clock, 0.01)
    assert adaptive.adapt(store, POLICY, lambda: BOTH) == []  # short, as declared
    for _ in range(3):
        run_job(store, clock, 2.0)
    (switch,) = adaptive.adapt(store, POLICY, lambda: BOTH)
    assert (switch.old_lane, switch.decision.lane) == ("prefork", "fork")
