"""Adaptive routing (``routing.adaptive``): the observed run times of each profile, the
route they choose, and the switch, once, when it changes.

- The finish script keeps each profile's sketch (``Keys.runtimes``: the run times of its
  last ``RUNTIME_SKETCH_SIZE`` attempts); nothing here scans job records.
- Every janitor pass (each worker's duties, ``taskrouter janitor``) reads the sketches
  and routes of the adaptive profiles in one round trip, asks ``router.classify`` (rule
  ``observed``) where each belongs, and switches a profile whose decision moved with
  ``route_switch.lua``, which only one of many janitors wins. A switch is logged and
  counted (``switched_to_<lane>`` in the counters of ``/metrics``).
- Enqueuing processes read a profile's route (``Keys.route``) at most every
  ``ROUTE_CACHE_TTL`` and send its new jobs there (``Routes``). A job stays on the engine
  it was sent to, retries included: the workers of both candidate lanes consume an
  adaptive profile's queues (``derive.lane_queues``), and a switch waits until a worker
  of the target lane that consumes its queue is alive.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from taskrouter.classify import Decision, Observed, adaptive, classify
from taskrouter.derive import Derived, ProfileSettings
from taskrouter.observed import Figures, advise, candidate_lanes, lane_queue
from taskrouter.policy import LANE_ENGINE, Lane, Policy, Profile
from taskrouter.settings import ROUTE_CACHE_TTL, RUNTIME_SKETCH_SIZE

from .errors import engine_errors
from .heartbeats import WorkerInfo
from .store import JobStore

log = logging.getLogger("taskrouter.adaptive")


@dataclass(frozen=True, slots=True)
class Seen:
    """A profile's sketch and route as read from Redis."""

    runtimes_ms: list[int]
    route: dict[str, str]

    @property
    def figures(self) -> Figures:
        return Figures.of(self.runtimes_ms)

    def observed(self, now_ms: int, live: frozenset[str], *, switched: bool) -> Observed:
        """What classify needs; ``switched``: the route is one this policy can serve
        (else the profile is as if it never switched)."""
        fig, route = self.figures, self.route
        since = route.get("since_ms") if switched else None
        return Observed(
            p90=fig.p90,
            count=fig.count,
            long=route.get("lane") != "prefork" if switched else None,
            since=math.inf if not since else max(0.0, (now_ms - int(since)) / 1000),
            live=live,
        )


def adaptive_profiles(policy: Policy) -> list[Profile]:
    return [p for p in policy.profiles.values() if adaptive(p, policy.routing)]


def read(store: JobStore, names: Iterable[str]) -> dict[str, Seen]:
    """The sketch and the route of each profile of ``names``, in one round trip."""
    names = list(names)
    if not names:
        return {}
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for name in names:
            pipe.lrange(store.keys.runtimes(name), 0, RUNTIME_SKETCH_SIZE - 1)
            pipe.hgetall(store.keys.route(name))
        replies = pipe.execute()
    return {
        name: Seen([int(float(v)) for v in replies[2 * i]], dict(replies[2 * i + 1]))
        for i, name in enumerate(names)
    }


def read_tasks(store: JobStore, names: Iterable[str]) -> dict[str, dict[str, Figures]]:
    """The figures of each task of each profile of ``names`` that has a sketch; two round
    trips."""
    names = list(names)
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for name in names:
            pipe.smembers(store.keys.runtime_tasks(name))
        tasks = [sorted(t) for t in pipe.execute()]
        pipe = store.client.pipeline(transaction=False)
        for name, of in zip(names, tasks, strict=True):
            for task in of:
                pipe.lrange(store.keys.task_runtimes(name, task), 0, RUNTIME_SKETCH_SIZE - 1)
        replies = iter(pipe.execute())
    return {
        name: {task: Figures.of([int(float(v)) for v in next(replies)]) for task in of}
        for name, of in zip(names, tasks, strict=True)
    }


def live_lanes(profile: Profile, policy: Policy, workers: Iterable[WorkerInfo]) -> frozenset[str]:
    """The lanes of ``profile`` with a live worker that consumes its queue there."""
    workers = list(workers)
    return frozenset(
        lane
        for lane in candidate_lanes(profile, policy.routing)
        if any(
            w.lane == lane and lane_queue(profile, policy.routing, lane) in w.queues
            for w in workers
        )
    )


def decide(
    profile: Profile, policy: Policy, seen: Seen, now_ms: int, live: frozenset[str]
) -> Decision:
    """Where ``profile`` belongs now (``router.classify`` with what was observed)."""
    switched = seen.route.get("lane") in candidate_lanes(profile, policy.routing)
    return classify(profile, policy.routing, seen.observed(now_ms, live, switched=switched))


def current_lane(profile: Profile, policy: Policy, seen: Seen) -> str:
    """The lane new jobs of ``profile`` go to now: its route's (if this policy can serve
    it), else the declared one."""
    lane = seen.route.get("lane")
    if lane in candidate_lanes(profile, policy.routing):
        return str(lane)
    return classify(profile, policy.routing).lane


@dataclass(frozen=True, slots=True)
class Switch:
    profile: str
    old_lane: str
    decision: Decision


def adapt(
    store: JobStore, policy: Policy, live: Callable[[], Iterable[WorkerInfo]]
) -> list[Switch]:
    """Switch every adaptive profile whose observed decision left its lane; one janitor
    pass. ``live`` gives the live workers (read only when some profile is adaptive).
    Returns the switches this call made."""
    profiles = adaptive_profiles(policy)
    if not profiles:
        return []
    workers = list(live())
    now = store.clock()
    seen = read(store, (p.name for p in profiles))
    switches = []
    for profile in profiles:
        s = seen[profile.name]
        d = decide(profile, policy, s, now, live_lanes(profile, policy, workers))
        old = current_lane(profile, policy, s)
        if d.lane == old:
            continue
        fig = s.figures
        won = store.run(
            "route_switch",
            profile.name,
            s.route.get("since_ms", ""),
            d.backend,
            d.lane,
            lane_queue(profile, policy.routing, d.lane),
            0 if d.lane == "prefork" else 1,
            now,
            d.reason,
            int(fig.p90 * 1000),
            fig.count,
        )
        if won:
            log.warning(
                "adaptive routing: profile %s moves from the %s lane to the %s lane (%s): %s",
                profile.name,
                old,
                d.lane,
                d.backend,
                d.reason,
            )
            switches.append(Switch(profile.name, old, d))
    return switches


class Routes:
    """The settings each new job of a profile is sent with: the derived ones, or for an
    adaptive profile the route its last switch chose (reread at most every ``ttl``)."""

    def __init__(
        self,
        store: JobStore,
        derived: Derived,
        *,
        ttl: float = ROUTE_CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.derived = derived
        self.ttl = ttl
        self.clock = clock
        routing = derived.policy.routing
        # Each adaptive profile's lanes, and its queue on each.
        self.lanes: dict[str, dict[str, str]] = {
            p.name: {lane: lane_queue(p, routing, lane) for lane in candidate_lanes(p, routing)}
            for p in adaptive_profiles(derived.policy)
        }
        self._cache: dict[str, tuple[float, ProfileSettings]] = {}

    def reads(self, profile: str) -> bool:
        """Whether ``settings`` of ``profile`` would read Redis now (an adaptive profile
        whose cached route is older than ``ttl``): the API plans those off its loop."""
        if profile not in self.lanes:
            return False
        cached = self._cache.get(profile)
        return cached is None or self.clock() - cached[0] >= self.ttl

    def settings(self, ps: ProfileSettings) -> ProfileSettings:
        lanes = self.lanes.get(ps.profile)
        if lanes is None:
            return ps
        now = self.clock()
        cached = self._cache.get(ps.profile)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        with engine_errors():
            route = self.store.client.hgetall(self.store.keys.route(ps.profile))
        routed = routed_settings(ps, route, lanes)
        self._cache[ps.profile] = (now, routed)
        return routed


def routed_settings(
    ps: ProfileSettings, route: Mapping[str, Any], lanes: Mapping[str, str]
) -> ProfileSettings:
    """``ps`` sent where ``route`` (a route hash) says, if it names another of the
    profile's ``lanes`` (lane: queue). A route this policy cannot serve (written under
    another policy: another kind, another queue) is ignored: the next janitor pass
    writes one it can."""
    lane = str(route.get("lane") or "")
    if lane not in lanes or lane == ps.lane:
        return ps
    return replace(
        ps,
        backend=LANE_ENGINE[lane],
        lane=cast(Lane, lane),
        queue=lanes[lane],
        rule="observed",
        reason=route.get("reason", ""),
    )


def report(
    store: JobStore, policy: Policy, live: Callable[[], Iterable[WorkerInfo]]
) -> dict[str, dict[str, Any]]:
    """Per profile: its declared expected_latency against its observed p50, p90 and p95
    and count, where those figures would route it and the policy edit that says so
    (``taskrouter policy advise``, ``GET /profiles``), the same figures per task; for an
    adaptive profile, its route now and how many times it switched."""
    seen = read(store, policy.profiles)
    by_task = read_tasks(store, policy.profiles)
    workers = list(live()) if policy.routing.adaptive is not None else []
    now = store.clock()
    out: dict[str, dict[str, Any]] = {}
    for name, profile in policy.profiles.items():
        s = seen[name]
        entry = advise(profile, policy.routing, s.figures).to_dict()
        entry["tasks"] = [
            {"task": task, "count": f.count, "p50": f.p50, "p90": f.p90, "p95": f.p95}
            for task, f in by_task[name].items()
            if f.count
        ]
        if adaptive(profile, policy.routing):
            d = decide(profile, policy, s, now, live_lanes(profile, policy, workers))
            entry["adaptive"] = {
                "lane": current_lane(profile, policy, s),
                "backend": s.route.get("backend") or classify(profile, policy.routing).backend,
                "queue": s.route.get("queue")
                or lane_queue(profile, policy.routing, classify(profile, policy.routing).lane),
                "switched_at": int(s.route["since_ms"]) if s.route.get("since_ms") else None,
                "switches": int(s.route.get("switches") or 0),
                "rule": d.rule,
                "reason": d.reason,
                "next_lane": d.lane,
            }
        else:
            entry["adaptive"] = None
        out[name] = entry
    return out
