"""``taskrouter policy advise``: each profile's declared expected_latency against its
observed run times, where those would route it, and the policy edit that says so.

The figures are the profile's sketch (``backends/adaptive.py``), read in one round trip:
no job record is scanned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskrouter.backends import adaptive
from taskrouter.backends.heartbeats import WorkerRegistry
from taskrouter.backends.store import JobStore
from taskrouter.derive import Derived
from taskrouter.durations import format_duration
from taskrouter.settings import Settings

_COLUMNS = ("profile", "declared", "runs", "p50", "p95", "routes to", "observed choose")


def gather(derived: Derived, settings: Settings) -> dict[str, dict[str, Any]]:
    """adaptive.report for ``derived``'s policy, on the Redis of ``settings``."""
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        registry = WorkerRegistry(store, settings.worker_alive_window)
        return adaptive.report(store, derived.policy, registry.live)
    finally:
        store.close()


def _where(backend: str | None, lane: str | None) -> str:
    return f"{backend} ({lane})" if backend else "-"


def _secs(seconds: float, runs: int) -> str:
    return format_duration(seconds) if runs else "-"


def render(derived: Derived, seen: Mapping[str, Mapping[str, Any]]) -> str:
    """The table, then one line per edit to make and per adaptive route."""
    rows = []
    notes = []
    for name, ps in derived.profiles.items():
        s = seen[name]
        runs = s["observed"]["count"]
        rows.append(
            (
                name,
                format_duration(s["expected_latency"]),
                str(runs),
                _secs(s["observed"]["p50"], runs),
                _secs(s["observed"]["p95"], runs),
                _where(ps.backend, ps.lane),
                _where(s["observed_backend"], s["observed_lane"]),
            )
        )
        if len(s["tasks"]) > 1:  # one task's figures are the profile's
            for t in s["tasks"]:
                rows.append(
                    (
                        f"  {t['task']}",
                        "",
                        str(t["count"]),
                        _secs(t["p50"], t["count"]),
                        _secs(t["p95"], t["count"]),
                        "",
                        "",
                    )
                )
        if s["edit"]:
            at = f"{derived.policy.path}:{s['line']}" if s["line"] else derived.policy.path
            notes.append(f"edit {at}: {s['edit']}")
        route = s.get("adaptive")
        if route:
            notes.append(
                f"{name}: routing.adaptive sends it to {route['backend']} ({route['lane']}, "
                f"queue {route['queue']}) after {route['switches']} switches; {route['reason']}"
            )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if notes:
        lines += ["", *notes]
    else:
        lines += ["", "no edit needed: every observed profile routes as declared"]
    return "\n".join(lines)
