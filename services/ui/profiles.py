"""The profiles page: each profile as the policy derives it, how full its global limits
are now, and how long its jobs really run against the declared ``expected_latency``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskrouter.backends.errors import engine_errors
from taskrouter.backends.runtime import Runtime
from taskrouter.backends.store import now_ms
from taskrouter.derive import LONG_RUNNING_AFTER, Derived
from taskrouter.durations import format_duration
from taskrouter.services.api.profiles import observed_profiles_dict

RECENT = 300  # newest jobs of each profile read for the run times
MIN_SAMPLES = 5  # fewer finished runs than this say nothing
SLOWER = 2.0  # p95 over expected_latency x this: flagged
FASTER = 0.25  # p50 under expected_latency x this: flagged, for profiles of 1 s or more


@dataclass(slots=True)
class Limit:
    what: str  # "concurrency" | "rate"
    used: int
    cap: int
    window_ms: int | None = None  # the rate's window

    @property
    def full(self) -> bool:
        return self.used >= self.cap


@dataclass(slots=True)
class Observed:
    samples: int
    p50: float | None
    p95: float | None
    flags: list[str]


@dataclass(slots=True)
class ProfileView:
    settings: dict[str, Any]  # profiles_dict's entry: engine, rule, reason, derived settings
    expected_latency: float
    shape: str
    limits: list[Limit]
    observed: Observed


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ascending values (None for none)."""
    if not sorted_values:
        return None
    rank = max(1, round(q * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(len(sorted_values), rank) - 1]


def judge(expected: float, long_after: float, runs: Sequence[float]) -> Observed:
    """p50 and p95 of ``runs`` (seconds) and what disagrees with ``expected``."""
    values = sorted(runs)
    p50, p95 = percentile(values, 0.5), percentile(values, 0.95)
    flags: list[str] = []
    if len(values) >= MIN_SAMPLES and p50 is not None and p95 is not None:
        if (p50 >= long_after) != (expected >= long_after):
            side = "long (RQ by the rules)" if p50 >= long_after else "short (Celery by the rules)"
            flags.append(
                f"p50 {format_duration(round(p50, 3))} is {side}: routing.long_after is "
                f"{format_duration(long_after)}, expected_latency {format_duration(expected)}"
            )
        if p95 > expected * SLOWER:
            flags.append(f"p95 is over {SLOWER:g}x expected_latency")
        # Sub-second tasks that run faster than declared change nothing; a long profile
        # that runs short holds prefetch 1 (and maybe RQ's fork per job) for nothing.
        if expected >= LONG_RUNNING_AFTER and p50 < expected * FASTER:
            flags.append(f"p50 is under {FASTER:g}x expected_latency")
    return Observed(len(values), p50, p95, flags)


def views(runtime: Runtime) -> list[ProfileView]:
    """Every profile of the policy, in policy order; four round trips in all (five with
    routing.adaptive: the live workers)."""
    derived: Derived = runtime.derived
    store = runtime.store
    names = list(derived.profiles)
    now = now_ms()
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(store.keys.limits(name))
            pipe.zrange(store.keys.index("profile", name), 0, RECENT - 1, desc=True)
        first = pipe.execute()
        published = first[0::2]
        recent = first[1::2]
        pipe = store.client.pipeline(transaction=False)
        for name, limits in zip(names, published, strict=True):
            ps = derived.profiles[name]
            cap = limits.get("concurrency") or ps.concurrency
            if cap:
                pipe.zcount(store.keys.slots(name), now, "+inf")  # expired slots are free
            per = limits.get("rate_per_ms") or (ps.rate_limit.per * 1000 if ps.rate_limit else None)
            if per:
                pipe.zcount(store.keys.rate(name), now - int(float(per)), "+inf")
        for ids in recent:
            for job_id in ids:
                pipe.hmget(store.keys.job(job_id), ["state", "started_at", "finished_at"])
        second = iter(pipe.execute())
    out = []
    # With each profile's sketch and, under routing.adaptive, its route and switches.
    by_name = {p["profile"]: p for p in observed_profiles_dict(runtime)["profiles"]}
    long_after = derived.policy.routing.long_after
    for name, limits in zip(names, published, strict=True):
        ps = derived.profiles[name]
        shown: list[Limit] = []
        cap = limits.get("concurrency") or ps.concurrency
        if cap:
            shown.append(Limit("concurrency", int(next(second)), int(cap)))
        per = limits.get("rate_per_ms") or (ps.rate_limit.per * 1000 if ps.rate_limit else None)
        count = limits.get("rate_count") or (ps.rate_limit.count if ps.rate_limit else None)
        if per:
            shown.append(Limit("rate", int(next(second)), int(count or 0), int(float(per))))
        out.append(
            ProfileView(
                settings=by_name[name],
                expected_latency=derived.policy.profiles[name].expected_latency,
                shape=derived.policy.profiles[name].shape,
                limits=shown,
                observed=Observed(0, None, None, []),
            )
        )
    for view, ids in zip(out, recent, strict=True):
        runs = []
        for _ in ids:
            state, started, finished = next(second)
            if state in ("succeeded", "failed") and started and finished:
                runs.append(max(0.0, (float(finished) - float(started)) / 1000))
        view.observed = judge(view.expected_latency, long_after, runs)
    return out
