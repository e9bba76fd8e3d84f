"""Plain-text views of a derived policy, for ``taskrouter policy check`` and ``explain``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from taskrouter.classify import adaptive
from taskrouter.derive import (
    IO_CONCURRENCY,
    Derived,
    ProfileSettings,
    grace,
    prefetch_multiplier,
    profile_visibility_need,
)
from taskrouter.durations import format_duration
from taskrouter.observed import candidate_lanes, lane_queue
from taskrouter.policy import PerKey, Retries, RetryAfterPolicy

CHECK_COLUMNS = ("profile", "backend", "lane", "queue", "timeout", "retries", "reason")


def render_check(derived: Derived) -> str:
    """One row per profile (backend, lane, queue, timeout, retries, reason) and the Celery
    window."""
    rows = [
        (
            s.profile,
            s.backend,
            s.lane,
            s.queue,
            format_duration(s.soft_time_limit),
            format_retries(s.retries),
            s.reason,
        )
        for s in derived.profiles.values()
    ]
    lines = _table(CHECK_COLUMNS, rows)
    lines.append("")
    lines.append(_visibility_line(derived))
    lines.extend(_adaptive_lines(derived))
    return "\n".join(lines)


def _adaptive_lines(derived: Derived) -> list[str]:
    routing = derived.policy.routing
    tuning = routing.adaptive
    names = [p.name for p in derived.policy.profiles.values() if adaptive(p, routing)]
    if tuning is None or not names:
        return []
    return [
        f"routing.adaptive: {', '.join(names)} go where their observed p90 says once they "
        f"have {tuning.min_samples} runs (band {tuning.band:.0%}, dwell "
        f"{format_duration(tuning.dwell)}); the table shows the declared routing, "
        "`taskrouter policy advise` the observed one"
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns; the last one is not padded, so long reasons do not pad lines."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row: Sequence[str]) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        return "  ".join([*cells, row[-1]])

    return [line(header), *(line(row) for row in rows)]


def _visibility_line(derived: Derived) -> str:
    return f"Celery visibility timeout {derived.visibility_timeout}s: {derived.visibility_reason}"


def format_retries(retries: Retries) -> str:
    """``"3, backoff 10s 1m 5m"``, ``"2"`` or ``"none"``."""
    if retries.max == 0:
        return "none"
    if not retries.backoff:
        return f"{retries.max}, no backoff"
    return f"{retries.max}, backoff {' '.join(format_duration(d) for d in retries.backoff)}"


def render_explain(derived: Derived, name: str) -> str:
    """The decision for profile ``name``, why, and each derived setting, one per line.

    Raises KeyError, listing the known profiles, when ``name`` is not in the policy.
    """
    profile = derived.policy.profile(name)
    settings = derived.profiles[name]
    where = f"{derived.policy.path}:{profile.line}" if profile.line else derived.policy.path
    pairs = [
        ("profile", f"{name} ({where})"),
        ("backend", f"{settings.backend} (rule: {settings.rule})"),
        ("lane", _LANES[settings.lane]),
        ("reason", settings.reason),
        ("queue", settings.queue),
        ("shape", profile.shape),
        ("expected_latency", format_duration(profile.expected_latency)),
        *_limits(settings),
        ("max_attempts", f"{settings.max_attempts} (retries: {format_retries(settings.retries)})"),
        ("keep_results", f"{format_duration(settings.keep_results)} (results and job records)"),
        (
            "concurrency",
            f"{settings.concurrency} at once, across all workers"
            if settings.concurrency
            else "no global cap",
        ),
        (
            "rate_limit",
            f"{settings.rate_limit} starts, across all workers"
            if settings.rate_limit
            else "no global cap",
        ),
        *_flow(settings),
        *_engine_specific(derived, settings),
        *_adaptive(derived, name),
    ]
    width = max(len(key) for key, _ in pairs)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in pairs)


def _adaptive(derived: Derived, name: str) -> list[tuple[str, str]]:
    routing, profile = derived.policy.routing, derived.policy.profile(name)
    tuning = routing.adaptive
    if tuning is None or not adaptive(profile, routing):
        return []
    lanes = ", ".join(
        f"{lane} (queue {lane_queue(profile, routing, lane)})"
        for lane in candidate_lanes(profile, routing)
    )
    return [
        (
            "adaptive",
            f"routed by its observed p90 after {tuning.min_samples} runs (band "
            f"{tuning.band:.0%}, dwell {format_duration(tuning.dwell)}); served on {lanes}: "
            "taskrouter policy advise shows it now",
        )
    ]


def _flow(settings: ProfileSettings) -> list[tuple[str, str]]:
    """Flow control rows (per_key, retry_after, budget), for the profiles that set them."""
    rows: list[tuple[str, str]] = []
    pk = settings.per_key
    if pk != PerKey():
        parts = [f"key: argument {pk.key!r}" if pk.key else "key: task.using(limit_key=)"]
        parts.append(f"{pk.concurrency} at once" if pk.concurrency else "no cap")
        parts.append(f"{pk.rate_limit} starts" if pk.rate_limit else "no rate")
        rows.append(("per_key", ", ".join(parts) + "; waiting keys start round-robin"))
    ra = settings.retry_after
    if ra != RetryAfterPolicy():
        holds = {"none": "only the job", "key": "its limit key", "profile": "the whole profile"}
        http = f"HTTP 429 too (default wait {format_duration(ra.default)})" if ra.http_429 else ""
        rows.append(
            (
                "retry_after",
                f"waits hold {holds[ra.pause]}; at most {ra.max} waits; {http}".rstrip("; "),
            )
        )
    if (b := settings.budget) is not None:
        per_key = f", {b.per_key:g} per key" if b.per_key is not None else ""
        price = f"; {b.price:g} charged per unit of cost at start" if b.price is not None else ""
        rows.append(
            (
                "budget",
                f"{b.limit:g} per {format_duration(b.per)}{per_key}; then {b.when_reached}{price}",
            )
        )
    return rows


def _limits(settings: ProfileSettings) -> list[tuple[str, str]]:
    soft = settings.soft_time_limit
    hard = format_duration(settings.time_limit)
    return [
        ("timeout", f"{format_duration(soft)} (soft limit: the task gets a timeout error)"),
        ("time_limit", f"{hard} (timeout + {format_duration(grace(soft))} grace: then killed)"),
        ("job_timeout", f"{settings.job_timeout}s (the timeout in whole seconds, for RQ)"),
    ]


_LANES = {
    "prefork": "prefork (Celery's prefork pool: taskrouter worker --backend celery)",
    "fork": "fork (RQ, a fresh forked work-horse per job: taskrouter worker --backend rq)",
    "io": "io (the I/O lane: thousands of waiting calls per process, taskrouter worker --lane io)",
}


def _engine_specific(derived: Derived, settings: ProfileSettings) -> list[tuple[str, str]]:
    if settings.backend == "rq":
        return [("rq worker", "a fresh forked work-horse per job")]
    if settings.lane == "io":
        per = settings.concurrency or IO_CONCURRENCY
        return [
            ("in flight", f"{per} calls per lane process (its concurrency cap, or the default)"),
            ("acks", "at start; a dead lane process's jobs come back through their leases"),
        ]
    profile = derived.policy.profile(settings.profile)
    multiplier = prefetch_multiplier(derived, [settings.queue])
    why = (
        "a profile with expected_latency >= 1s, or routed by its observed run times, uses "
        "this queue"
        if multiplier == 1
        else "only sub-second tasks on this queue"
    )
    need = math.ceil(profile_visibility_need(profile))
    return [
        ("prefetch", f"{multiplier} per worker process ({why})"),
        (
            "visibility",
            f"needs {need}s; the Celery visibility timeout is {derived.visibility_timeout}s",
        ),
    ]
