"""Every default of taskrouter, and the environment variables that override them."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POLICY = "./policies.yaml"
DEFAULT_KEY_PREFIX = "taskrouter"

# A running job's lease is renewed every LEASE_TTL / 3 by the process that runs it; a
# job whose lease lapses belongs to a dead worker. Small enough for the janitor to see a
# death within a minute, large enough to ride out a GC pause or a slow Redis.
LEASE_TTL = 15.0
# How often the worker-side pump moves due retries from the router's schedule to the
# engines, and how often the janitor looks for lapsed leases.
SCHEDULE_POLL = 0.5
JANITOR_INTERVAL = 5.0
# A dispatch that was taken off the schedule but never reached its engine (the process
# died in between) is sent again after this long.
DISPATCH_GRACE = 30.0
# Finished records are kept keep_results; a record that never finishes (its queue is
# never served) is kept this long so that it cannot grow Redis without bound.
UNFINISHED_TTL = 30 * 86400
# The janitor's sweep of expired records' index entries (and of the engines' registries):
# one short script call per batch, at most this many batches per pass (a burst of
# 20,000 jobs expiring at once is cleared in two passes).
SWEEP_BATCH = 500
SWEEP_BATCHES = 20
# A worker whose heartbeat is older than its lease TTL, and at least this, is dead (it
# beats about every second); its reserved Celery messages are then sent again.
MIN_ALIVE_WINDOW = 5.0
# A worker holding a finished attempt waits this long for an unreachable Redis (a
# restart, a failover) before giving the outcome up: it may have cost a paid call.
REDIS_PATIENCE = 120.0
# After a crash, a worker restarts itself with a growing delay; this many crashes, each
# within QUICK_FAILURE of its start, end it with the crash's error instead.
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
QUICK_FAILURES = 5
QUICK_FAILURE = 10.0

# Adaptive routing (routing.adaptive): the run times of this many last attempts are kept
# per profile and per task (a capped Redis list each, written by finish.lua), for this
# long after the last one; an enqueuing process rereads a profile's route at most this
# often.
RUNTIME_SKETCH_SIZE = 200
RUNTIME_SKETCH_TTL = 30 * 86400
ROUTE_CACHE_TTL = 1.0

# Jobs changed outside taskrouter (backends/reconcile.py): a queued job whose dispatch was
# queued this many janitor intervals ago is looked for in its engine, at most
# RECONCILE_BATCH records per pass; a broker queue longer than RECONCILE_MAX_QUEUE is
# not searched (Celery: the visibility window's requeue_stale covers it).
RECONCILE_AFTER = 3
RECONCILE_BATCH = 200
RECONCILE_MAX_QUEUE = 10_000

# Workflows. A step of a native Celery canvas whose Celery message has not come this
# long after it could run is presumed lost with a worker that died mid-canvas: the
# router's schedule then sends it itself (a copy sent early is refused at claim).
CANVAS_FALLBACK = 120.0
# A finished member nobody counted this long after it finished is caught up by a reader.
CATCH_UP_AFTER = 2.0
MAX_WORKFLOW_MEMBERS = 5000  # one workflow is created by one Redis script
MAX_WORKFLOW_DEPTH = 32

# Listing (GET /jobs, taskrouter jobs): page sizes, and how many index entries one call
# may examine before it answers a short page with a cursor rather than a slow request.
DEFAULT_PAGE = 50
MAX_PAGE = 500
SCAN_BUDGET = 5000

# The HTTP API.
MAX_BODY = 1024 * 1024  # bytes; a job's arguments belong in the record, not blobs
RETRY_AFTER = 5  # seconds; the hint given to clients of an unreachable engine
RECENT_FINISHED = 1000  # finished jobs per state behind the /metrics timing histograms

# The longest durations a policy may set: what Redis and the engines can hold, found on
# Linux x86-64 with CPython 3.11, Redis 7.0, RQ 3.0 and Celery 5.7 (the policy check
# refuses longer ones, naming these).
# keep_results: records expire by PEXPIRE in milliseconds from Lua scripts, where numbers
# are doubles: whole milliseconds are exact up to 2**53, and from 1e17 ms Lua writes them
# as "1e+17", which PEXPIRE refuses ("value is not an integer or out of range"). RQ's
# result_ttl and Celery's result_expires (EXPIRE in seconds) hold far more.
MAX_KEEP_RESULTS = 2**53 // 86_400_000 * 86_400  # seconds: 104249991d, about 285,000 years
# timeout: RQ's work-horse arms signal.alarm(job_timeout), and CPython's signal.alarm
# takes a C int ("OverflowError: Python int too large to convert to C int" from 2**31 s,
# raised before the job runs, so its record would stay queued). Celery's soft and hard
# limits are floats compared with the clock in the pool: any size runs.
MAX_TIMEOUT = 2**31 - 1  # seconds, about 68 years
# retries.backoff: in a Celery canvas a retry's wait is a countdown that Celery turns into
# an ETA, a datetime (OverflowError past the year 9999); held to the timeout's bound.
MAX_BACKOFF = MAX_TIMEOUT

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where taskrouter finds its servers and policy. Build with ``Settings.from_env()``."""

    redis_url: str = DEFAULT_REDIS_URL
    celery_broker_url: str | None = None
    policy_path: str = DEFAULT_POLICY
    api_token: str | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    # Engine-native key prefixes. None keeps the engines' own defaults ("rq", no kombu
    # prefix) so that stock rq and celery tools still see the queues.
    rq_key_prefix: str | None = None
    celery_key_prefix: str | None = None
    lease_ttl: float = LEASE_TTL
    janitor_interval: float = JANITOR_INTERVAL

    @property
    def worker_alive_window(self) -> float:
        """Seconds without a heartbeat after which a worker is dead: the same lease as a
        job's (at least MIN_ALIVE_WINDOW, for the pauses of a busy machine)."""
        return max(self.lease_ttl, MIN_ALIVE_WINDOW)

    @property
    def broker_url(self) -> str:
        return self.celery_broker_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        prefix = env.get("TASKROUTER_KEY_PREFIX") or DEFAULT_KEY_PREFIX
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(
                f"TASKROUTER_KEY_PREFIX={prefix!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
            )
        custom = bool(env.get("TASKROUTER_KEY_PREFIX"))
        return cls(
            lease_ttl=_seconds(env, "TASKROUTER_LEASE_TTL", LEASE_TTL, minimum=1.0),
            janitor_interval=_seconds(
                env, "TASKROUTER_JANITOR_INTERVAL", JANITOR_INTERVAL, minimum=0.1
            ),
            redis_url=env.get("TASKROUTER_REDIS_URL") or DEFAULT_REDIS_URL,
            celery_broker_url=env.get("TASKROUTER_CELERY_BROKER_URL") or None,
            policy_path=env.get("TASKROUTER_POLICY") or DEFAULT_POLICY,
            api_token=env.get("TASKROUTER_API_TOKEN") or None,
            key_prefix=prefix,
            rq_key_prefix=f"{prefix}-rq" if custom else None,
            celery_key_prefix=f"{prefix}-celery:" if custom else None,
        )

    def with_redis(self, url: str) -> Settings:
        return replace(self, redis_url=url)


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    from .durations import parse_duration

    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r}: {exc}") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r}: must be at least {minimum:g}s")
    return value
