"""Jobs submitted, succeeded and failed per minute over the last hour.

- Submitted: exact, from the creation scores of the all-jobs index (one ZCOUNT per
  minute), whatever ran when.
- Succeeded and failed: the index scores are creation times, and no index is kept by
  finishing time, so these come from the event counters that the Lua scripts keep
  (``Keys.counters``: lifetime totals, counted where a job finishes). Every API process
  samples their totals every ``SAMPLE_EVERY`` seconds and keeps the first sample of each
  minute (``HSETNX``: one per minute, whichever replica is first) in ``Keys.minutes``;
  a minute's figure is the difference between its sample and the next one. Limits: a
  minute is known only if an API process ran at its start and end (the chart leaves
  a gap otherwise), and its edges are those of the samples (up to ``SAMPLE_EVERY``
  late). Nothing on the workers' side changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from taskrouter.backends.errors import engine_errors
from taskrouter.backends.store import JobStore, now_ms

log = logging.getLogger("taskrouter.ui")

MINUTE_MS = 60_000
MINUTES = 60
SAMPLE_EVERY = 5.0  # seconds
KEEP_MS = 2 * 3600 * 1000
EVENTS = ("submitted", "succeeded", "failed")


@dataclass(frozen=True, slots=True)
class Minute:
    start_ms: int
    submitted: int
    succeeded: int | None  # None: no samples around this minute
    failed: int | None


def totals(counters: Mapping[str, str]) -> dict[str, int]:
    """The counters hash summed per event (fields ``event|profile|backend|queue|task``)."""
    out = dict.fromkeys(EVENTS, 0)
    for name, value in counters.items():
        event = name.split("|", 1)[0]
        if event in out:
            try:
                out[event] += int(value)
            except ValueError:
                continue
    return out


def _encode(sample: Mapping[str, int]) -> str:
    return " ".join(str(sample[e]) for e in EVENTS)


def _decode(text: str) -> dict[str, int] | None:
    parts = text.split()
    if len(parts) != len(EVENTS) or not all(p.isdigit() for p in parts):
        return None
    return dict(zip(EVENTS, map(int, parts), strict=True))


def sample(store: JobStore, at_ms: int | None = None) -> bool:
    """Keep this minute's sample of the totals unless one is kept already; True if new."""
    at = now_ms() if at_ms is None else at_ms
    minute = at // MINUTE_MS
    client = store.client
    with engine_errors():
        current = totals(client.hgetall(store.keys.counters()))
        pipe = client.pipeline(transaction=False)
        pipe.hsetnx(store.keys.minutes, str(minute), _encode(current))
        pipe.pexpire(store.keys.minutes, KEEP_MS)
        added = bool(pipe.execute()[0])
        if added:
            old = [
                f
                for f in client.hkeys(store.keys.minutes)
                if not f.isdigit() or int(f) < minute - KEEP_MS // MINUTE_MS
            ]
            if old:
                client.hdel(store.keys.minutes, *old)
    return added


def deltas(
    samples: Mapping[int, Mapping[str, int]],
    live: Mapping[str, int],
    minutes: list[int],
    now_minute: int,
) -> dict[int, dict[str, int] | None]:
    """Events per minute from the minute samples; the current minute runs to ``live``.
    A counter that went down (reset) counts as 0."""
    out: dict[int, dict[str, int] | None] = {}
    for m in minutes:
        start = samples.get(m)
        end = live if m == now_minute else samples.get(m + 1)
        if start is None or end is None:
            out[m] = None
        else:
            out[m] = {e: max(0, end[e] - start[e]) for e in EVENTS}
    return out


def series(store: JobStore, at_ms: int | None = None, minutes: int = MINUTES) -> list[Minute]:
    """The last ``minutes`` minutes, oldest first, the current one last; two round trips."""
    at = now_ms() if at_ms is None else at_ms
    now_minute = at // MINUTE_MS
    span = list(range(now_minute - minutes + 1, now_minute + 1))
    client = store.client
    with engine_errors():
        pipe = client.pipeline(transaction=False)
        for m in span:
            pipe.zcount(store.keys.index(), m * MINUTE_MS, m * MINUTE_MS + MINUTE_MS - 1)
        pipe.hgetall(store.keys.minutes)
        pipe.hgetall(store.keys.counters())
        replies = pipe.execute()
    submitted = [int(n) for n in replies[: len(span)]]
    raw_samples, counters = replies[len(span)], replies[len(span) + 1]
    samples = {
        int(k): decoded
        for k, v in raw_samples.items()
        if k.isdigit() and (decoded := _decode(v)) is not None
    }
    per = deltas(samples, totals(counters), span, now_minute)
    return [
        Minute(
            m * MINUTE_MS,
            n,
            None if per[m] is None else per[m]["succeeded"],  # type: ignore[index]
            None if per[m] is None else per[m]["failed"],  # type: ignore[index]
        )
        for m, n in zip(span, submitted, strict=True)
    ]


@contextlib.asynccontextmanager
async def sampling(store: JobStore, every: float = SAMPLE_EVERY) -> AsyncIterator[None]:
    """Sample the totals in the background while the API runs (its lifespan)."""

    async def loop() -> None:
        warned = False
        while True:
            try:
                await asyncio.to_thread(sample, store)
                warned = False
            except Exception as exc:  # Redis away: the chart shows a gap, nothing else fails
                if not warned:
                    log.warning("dashboard: could not sample the counters: %s", exc)
                    warned = True
            await asyncio.sleep(every)

    task = asyncio.create_task(loop(), name="taskrouter-ui-minutes")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
