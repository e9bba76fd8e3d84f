"""Reads over the job indexes: listing with filters and a stable cursor, and the figures
that ``/metrics`` shows. The HTTP API and ``taskrouter jobs`` share this code.

Every index (``Keys.index``) is a sorted set of job ids scored by creation time in ms,
written by create.lua and moved between state indexes with the same score. Within one
score Redis orders members by their bytes, so ``(score, id)`` is a total order in which
a job's place never changes. A cursor is the last ``(score, id)`` a page showed; the next
page resumes strictly after it. New jobs land above every existing cursor (their score
is their creation time), so paging while jobs arrive neither skips nor repeats any job
that existed when paging began.

Listing never scans keys: it walks the smallest index that matches one of the filters
(newest first, ``ZRANGE ... BYSCORE REV LIMIT``) and checks the other filters against
the records, fetched in one pipeline per batch. Records expire (keep_results) before the
janitor sweeps their index entries, so ids whose record is gone are skipped.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from taskrouter.errors import DamagedRecord, InvalidQuery
from taskrouter.job import Job, JobSource
from taskrouter.record import INDEXED, LISTED, TIMED
from taskrouter.settings import DEFAULT_PAGE, MAX_PAGE, SCAN_BUDGET
from taskrouter.states import STATES

from .errors import engine_errors
from .store import JobStore

FILTER_FIELDS = INDEXED
LIST_FIELDS = LISTED
DEFAULT_LIMIT = DEFAULT_PAGE
MAX_LIMIT = MAX_PAGE
_CURSOR_VERSION = "1"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """Listing filters; None matches everything."""

    state: str | None = None
    profile: str | None = None
    backend: str | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise InvalidQuery("state", f"{self.state!r} is not one of {', '.join(STATES)}")

    def pairs(self) -> list[tuple[str, str]]:
        return [(f, v) for f in FILTER_FIELDS if (v := getattr(self, f)) is not None]

    def matches(self, record: Mapping[str, str]) -> bool:
        return all(record.get(f) == v for f, v in self.pairs())


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in an index: strictly after ``(score, job_id)`` in newest-first order."""

    score: int
    job_id: str

    def encode(self) -> str:
        raw = f"{_CURSOR_VERSION}:{self.score}:{self.job_id}".encode()
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        # Opaque to clients, so that the encoding can change; a bad one is their input error.
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            version, score, job_id = raw.split(":", 2)
            if version != _CURSOR_VERSION or not job_id or not score.isdigit():
                raise ValueError(raw)
            return cls(int(score), job_id)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise InvalidQuery("cursor", "not a cursor returned by this API") from None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Job]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"items": [j.to_dict() for j in self.items], "next_cursor": self.next_cursor}


def _index_key(store: JobStore, pair: tuple[str, str] | None) -> str:
    return store.keys.index() if pair is None else store.keys.index(*pair)


def _smallest_index(store: JobStore, pairs: list[tuple[str, str]]) -> tuple[str, int | None]:
    """The index to walk: the smallest of the filters' indexes (its size, or None if unknown)."""
    if len(pairs) <= 1:
        return _index_key(store, pairs[0] if pairs else None), None
    keys = [_index_key(store, p) for p in pairs]
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        sizes = pipe.execute()
    size, key = min(zip(sizes, keys, strict=True))
    return key, int(size)


def list_jobs(
    store: JobStore,
    filters: JobFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    source: JobSource | None = None,
    scan_budget: int = SCAN_BUDGET,
) -> Page:
    """Jobs matching ``filters``, newest first, at most ``limit``, after ``cursor``.

    ``next_cursor`` is None when nothing older remains. A page may hold fewer than
    ``limit`` jobs while ``next_cursor`` is set: the scan budget ran out first.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", f"must be between 1 and {MAX_LIMIT}")
    filters = filters or JobFilter()
    after = Cursor.decode(cursor) if cursor else None
    pairs = filters.pairs()
    key, size = _smallest_index(store, pairs)
    if size == 0:
        return Page([], None)
    # With one filter or none the index is the filter (limit+1 rows tell whether there is
    # more); with more, read ahead, since the other filters drop rows. Records are checked
    # against every filter anyway: a job may change state between the two reads.
    batch = min(max(limit * 4, 100), 1000) if len(pairs) > 1 else limit + 1
    items: list[Job] = []
    last_item: Cursor | None = None
    last_seen: Cursor | None = None
    scanned = 0
    offset = 0  # grows only while a whole batch shares the cursor's score (see _fetch)
    while scanned < scan_budget:
        rows = _fetch(store, key, after, offset, batch)
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
                continue  # expired, or filtered out
            try:
                job = Job.from_record(record, source, member)
            except DamagedRecord:
                continue  # GET /jobs/{id} says what is wrong with it
            if len(items) == limit:
                # A matching job beyond the page: there is a next page.
                return Page(items, last_item.encode() if last_item else None)
            items.append(job)
            last_item = last_seen
        if len(rows) < batch:
            return Page(items, None)  # the index holds nothing older
        after = last_seen
    return Page(items, last_seen.encode() if last_seen else None)


def _older(score: int, member: str, after: Cursor) -> bool:
    return score < after.score or (score == after.score and member < after.job_id)


def _fetch(
    store: JobStore, key: str, after: Cursor | None, offset: int, count: int
) -> list[tuple[int, str]]:
    """Up to ``count`` index rows at or below the cursor's score, newest first.

    Rows at the cursor's own score that are not older than it come first and are
    dropped by the caller; ``offset`` steps over them when they fill a whole batch.
    """
    top: float | int = math.inf if after is None else after.score
    with engine_errors():
        rows = store.client.zrange(
            key,
            "+inf" if top == math.inf else top,
            "-inf",
            desc=True,
            byscore=True,
            offset=offset,
            num=count,
            withscores=True,
        )
    return [(int(score), member) for member, score in rows]


def _records(store: JobStore, ids: list[str]) -> list[dict[str, str] | None]:
    """The listed fields of each record (None where it has expired), in one round trip."""
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(store.keys.job(job_id), LIST_FIELDS)
        replies = pipe.execute(raise_on_error=False)
    out: list[dict[str, str] | None] = []
    for values in replies:
        # The id field is written at creation and never removed: missing means expired
        # (or damaged, as is a key of another type: an error reply).
        if isinstance(values, Exception) or values[0] is None:
            out.append(None)
        else:
            out.append({f: v for f, v in zip(LIST_FIELDS, values, strict=True) if v is not None})
    return out


# -- figures for /metrics -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Labels:
    profile: str
    backend: str
    queue: str
    task: str


@dataclass(slots=True)
class Finished:
    """Timings of one finished job, in seconds (None where the job never started)."""

    labels: Labels
    queue_wait: float | None
    run_time: float | None


@dataclass(slots=True)
class Figures:
    """What one scrape of /metrics reads from Redis."""

    by_state: dict[tuple[str, str], int] = field(default_factory=dict)  # (profile, state)
    counters: dict[tuple[str, Labels], int] = field(default_factory=dict)  # (event, labels)
    finished: list[Finished] = field(default_factory=list)


def _parse_counters(raw: Mapping[str, str]) -> dict[tuple[str, Labels], int]:
    out: dict[tuple[str, Labels], int] = {}
    for name, value in raw.items():
        parts = name.split("|", 4)
        if len(parts) != 5:
            continue  # not written by count() in common.lua
        event, profile, backend, queue, task = parts
        out[(event, Labels(profile, backend, queue, task))] = int(value)
    return out


def figures(store: JobStore, profiles: Iterable[str], *, recent: int = 1000) -> Figures:
    """Jobs by (profile, state), the event counters, and the timings of the newest
    ``recent`` succeeded and ``recent`` failed jobs, in two round trips.

    Jobs by state per profile are the size of the intersection of a state index and a
    profile index (ZINTERCARD walks the smaller set: the waiting and running states are
    small, and succeeded and failed are bounded by keep_results).
    """
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        pipe.hgetall(store.keys.counters())
        for state in TIMED_STATES:
            pipe.zrange(store.keys.index("state", state), 0, recent - 1, desc=True)
        first = pipe.execute()
    counted = _parse_counters(first[0])
    ids = [job_id for chunk in first[1:] for job_id in chunk]
    # Profiles of the policy, and those of older jobs that a changed policy dropped.
    names = sorted({*profiles, *(labels.profile for _, labels in counted)})
    pairs = [(p, s) for p in names for s in STATES]
    with engine_errors():
        pipe = store.client.pipeline(transaction=False)
        for profile, state in pairs:
            pipe.zintercard(
                2, [store.keys.index("state", state), store.keys.index("profile", profile)]
            )
        for job_id in ids:
            pipe.hmget(store.keys.job(job_id), _TIMING_FIELDS)
        second = pipe.execute()
    by_state = {pair: int(n) for pair, n in zip(pairs, second[: len(pairs)], strict=True)}
    finished = [f for values in second[len(pairs) :] if (f := _timings(values)) is not None]
    return Figures(by_state=by_state, counters=counted, finished=finished)


# Timings come from jobs that ran to an outcome; a cancel cuts a run short.
TIMED_STATES: tuple[str, ...] = ("succeeded", "failed")
_TIMING_FIELDS = TIMED


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return max(0.0, (float(end) - float(start)) / 1000)


def _timings(values: list[str | None]) -> Finished | None:
    state, profile, backend, queue, task, queued, started, ended = values
    if state not in TIMED_STATES:
        return None  # expired since the index was read
    return Finished(
        labels=Labels(profile or "", backend or "", queue or "", task or ""),
        queue_wait=_seconds(queued, started),
        run_time=_seconds(started, ended),
    )
