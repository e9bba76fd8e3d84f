"""The dashboard's reads over the job indexes, each bounded whatever the number of jobs.

Nothing here scans: sizes are ZCARD, per-minute submissions ZCOUNT over the creation
scores, listings walk an index newest first with a bounded budget (as
backends/queries.py does, here with a time range). Jobs by state *and* engine: an exact
ZINTERCARD costs a walk of the smaller set (about 0.7 us per member: 200 ms for 300,000),
so it is used only when the state's index is small; a larger one is split from a sample
of 200 of its members (10 runs of 20 at evenly spaced ranks: spread over the whole
creation-time range), looked up in an engine's index by one script of this module, and
shown as an estimate. ZRANDMEMBER is slower for this: about 9 us per member on a large
set (dictGetFairRandomKey), 20 ms for the seven states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from taskrouter.backends.errors import engine_errors
from taskrouter.backends.heartbeats import WorkerRegistry, counted
from taskrouter.backends.queries import (
    LIST_FIELDS,
    MAX_LIMIT,
    SCAN_BUDGET,
    Cursor,
    InvalidQuery,
    JobFilter,
    Page,
    list_jobs,
)
from taskrouter.backends.store import JobStore, now_ms
from taskrouter.job import Job
from taskrouter.states import STATES

ENGINES = ("celery", "rq")
EXACT_UP_TO = 1000  # members of a state index split exactly by ZINTERCARD
SAMPLE = 200  # WINDOWS x WIDTH: about +-7% at 95% confidence
WINDOWS, WIDTH = 10, 20  # the sample: 10 runs of 20 neighbours at evenly spaced ranks
# KEYS: a state index, an engine index. ARGV: windows, width. Returns how many of the
# sampled members of the first are in the second, and how many were sampled: a few
# ZRANGEs by rank (O(log n) each) and one ZMSCORE, about 20 calls whatever the size.
_SPLIT = """
local n = redis.call('ZCARD', KEYS[1])
local windows, width = tonumber(ARGV[1]), tonumber(ARGV[2])
local members = {}
if n <= windows * width then
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  for i = 0, windows - 1 do
    local first = math.floor(i * (n - width) / (windows - 1))
    for _, m in ipairs(redis.call('ZRANGE', KEYS[1], first, first + width - 1)) do
      members[#members + 1] = m
    end
  end
end
if #members == 0 then return {0, 0} end
local hits = 0
for _, score in ipairs(redis.call('ZMSCORE', KEYS[2], unpack(members))) do
  if score then hits = hits + 1 end
end
return {hits, #members}
"""
LIVE_WITHIN_MS = 15_000  # a worker seen this recently is alive (WorkerRegistry.alive)


@dataclass(slots=True)
class StateCount:
    state: str
    total: int
    by_engine: dict[str, int]
    estimated: bool = False


@dataclass(slots=True)
class Counts:
    """Jobs whose records exist now, by state and engine."""

    total: int
    by_engine: dict[str, int]
    states: list[StateCount] = field(default_factory=list)

    def of(self, state: str) -> StateCount:
        return next(s for s in self.states if s.state == state)


def counts(store: JobStore) -> Counts:
    """Jobs by state and engine now, in two round trips (see the module doc)."""
    keys = store.keys
    state_keys = [keys.index("state", s) for s in STATES]
    engine_keys = [keys.index("backend", e) for e in ENGINES]
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        pipe.zcard(keys.index())
        for key in [*state_keys, *engine_keys]:
            pipe.zcard(key)
        sizes = [int(n) for n in pipe.execute()]
        total, per_state, per_engine = sizes[0], sizes[1 : 1 + len(STATES)], sizes[-len(ENGINES) :]
        pipe = store.client.pipeline(transaction=False)
        plan: list[tuple[int, bool]] = []  # (state position, estimated)
        for i, n in enumerate(per_state):
            if n == 0:
                continue
            if n <= EXACT_UP_TO:
                pipe.zintercard(2, [state_keys[i], engine_keys[0]])
            else:
                pipe.eval(_SPLIT, 2, state_keys[i], engine_keys[0], WINDOWS, WIDTH)
            plan.append((i, n > EXACT_UP_TO))
        replies = pipe.execute() if plan else []
    first: dict[int, tuple[int, bool]] = {}  # state position -> (on the first engine, estimated)
    for (i, estimated), reply in zip(plan, replies, strict=True):
        if estimated:
            hits, read = (int(x) for x in reply)
            first[i] = (round(per_state[i] * hits / max(1, read)), True)
        else:
            first[i] = (int(reply), False)
    states = []
    for i, state in enumerate(STATES):
        n = per_state[i]
        on_first, estimated = first.get(i, (0, False))
        # Every record names one of the two engines: the second is the rest.
        split = {ENGINES[0]: on_first, ENGINES[1]: max(0, n - on_first)}
        states.append(StateCount(state, n, split, estimated))
    return Counts(total, dict(zip(ENGINES, per_engine, strict=True)), states)


# -- listing with a time range ---------------------------------------------------------------


def list_between(
    store: JobStore,
    filters: JobFilter,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
    scan_budget: int = SCAN_BUDGET,
) -> Page:
    """``list_jobs`` with creation-time bounds (ms, both inclusive): the same cursor and
    the same walk of the smallest matching index, between the scores."""
    if since_ms is None and until_ms is None:
        return list_jobs(store, filters, limit=limit, cursor=cursor, scan_budget=scan_budget)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", f"must be between 1 and {MAX_LIMIT}")
    after = Cursor.decode(cursor) if cursor else None
    bottom: float = -math.inf if since_ms is None else since_ms
    if until_ms is not None and (after is None or after.score > until_ms):
        # Strictly after (until + 1, ""): every job created at or before ``until``.
        after = Cursor(until_ms + 1, "")
    key = _smallest_index(store, filters.pairs())
    batch = min(max(limit * 4, 100), 1000) if len(filters.pairs()) > 1 else limit + 1
    items: list[Job] = []
    last_item: Cursor | None = None
    last_seen: Cursor | None = None
    scanned = offset = 0
    while scanned < scan_budget:
        rows = _rows(store, key, after, bottom, offset, batch)
        fresh = [(s, m) for s, m in rows if after is None or _older(s, m, after)]
        if rows and not fresh:
            offset += len(rows)
            continue
        offset = 0
        for (score, member), record in zip(
            fresh, _records(store, [m for _, m in fresh]), strict=True
        ):
            scanned += 1
            last_seen = Cursor(score, member)
            if record is None or not filters.matches(record):
                continue
            if len(items) == limit:
                return Page(items, last_item.encode() if last_item else None)
            items.append(Job.from_record(record))
            last_item = last_seen
        if len(rows) < batch:
            return Page(items, None)
        after = last_seen
    return Page(items, last_seen.encode() if last_seen else None)


def _older(score: int, member: str, after: Cursor) -> bool:
    return score < after.score or (score == after.score and member < after.job_id)


def _smallest_index(store: JobStore, pairs: list[tuple[str, str]]) -> str:
    keys = [store.keys.index(*p) for p in pairs] or [store.keys.index()]
    if len(keys) == 1:
        return keys[0]
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        sizes = pipe.execute()
    return min(zip(sizes, keys, strict=True))[1]


def _rows(
    store: JobStore, key: str, after: Cursor | None, bottom: float, offset: int, count: int
) -> list[tuple[int, str]]:
    top: Any = "+inf" if after is None else after.score
    low: Any = "-inf" if bottom == -math.inf else int(bottom)
    with engine_errors():
        rows = store.client.zrange(
            key, top, low, desc=True, byscore=True, offset=offset, num=count, withscores=True
        )
    return [(int(score), member) for member, score in rows]


def _records(store: JobStore, ids: list[str]) -> list[dict[str, str] | None]:
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(store.keys.job(job_id), LIST_FIELDS)
        replies = pipe.execute()
    return [
        None if values[0] is None else {f: v for f, v in zip(LIST_FIELDS, values, strict=True) if v}
        for values in replies
    ]


# -- workers -------------------------------------------------------------------------------


@dataclass(slots=True)
class Worker:
    engine: str
    name: str
    seen_ms: int
    extra: dict[str, str]  # what its heartbeat says: lane, queues, processes, jobs now
    counted: int = 1  # workers as the engine's tools count them (RQ: one per process)

    @property
    def age_ms(self) -> int:
        return max(0, now_ms() - self.seen_ms)


# Running jobs read per page to show what each worker process runs now.
RUNNING_SHOWN = 2000


def workers(store: JobStore, window_s: float = LIVE_WITHIN_MS / 1000) -> list[Worker]:
    """Live workers from their heartbeats, each with its lane, queues, processes and the
    jobs its processes run now (from the running jobs' records, at most RUNNING_SHOWN)."""
    found = WorkerRegistry(store, window_s).live()
    running = _running_by_worker(store) if found else {}
    out = []
    for info in found:
        jobs = running.get(info.name, [])
        extra = {
            "lane": info.lane,
            "host": info.host,
            "queues": ", ".join(info.queues),
            "processes": ", ".join(str(p.get("pid")) for p in info.processes),
            "running": str(len(jobs)),
        }
        if info.node:  # the name Flower and `celery inspect` show
            extra["node"] = info.node
        if jobs:
            extra["job"] = jobs[0]
        out.append(Worker(info.engine, info.name, info.beat_at, extra, counted(info)))
    return sorted(out, key=lambda w: (w.engine, w.name))


def _running_by_worker(store: JobStore) -> dict[str, list[str]]:
    """Running job ids by the worker that runs them (a record names "<worker>/<pid>";
    an RQ worker's own name is in its pool's list of processes)."""
    with engine_errors():
        ids = store.client.zrange(store.keys.running, 0, RUNNING_SHOWN - 1)
        pipe = store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(store.keys.job(job_id), "worker")
        names = pipe.execute() if ids else []
    by: dict[str, list[str]] = {}
    for job_id, name in zip(ids, names, strict=True):
        if name:
            by.setdefault(name.rsplit("/", 1)[0], []).append(job_id)
    return by


def live_per_engine(found: list[Worker]) -> dict[str, int]:
    """Live workers per engine, counted as ``celery inspect`` and ``rq info`` count them."""
    per = dict.fromkeys(ENGINES, 0)
    for w in found:
        per[w.engine] = per.get(w.engine, 0) + w.counted
    return per


def lanes(found: list[Worker]) -> dict[tuple[str, str], int]:
    """Live workers per (engine, lane), where workers publish a lane."""
    per: dict[tuple[str, str], int] = {}
    for w in found:
        lane = w.extra.get("lane")
        if lane:
            per[(w.engine, lane)] = per.get((w.engine, lane), 0) + w.counted
    return per
