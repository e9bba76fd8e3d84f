"""Every Redis key taskrouter writes, in one place.

The engines' own keys (RQ's ``rq:*``, kombu's queues) are named by the engines; their
prefixes are set from ``Settings.rq_key_prefix`` and ``Settings.celery_key_prefix``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    def job(self, job_id: str) -> str:
        """Hash: one job record."""
        return f"{self.prefix}:job:{job_id}"

    def workflow(self, workflow_id: str) -> str:
        """Hash: one workflow record."""
        return f"{self.prefix}:wf:{workflow_id}"

    def index(self, field: str = "all", value: str = "") -> str:
        """Sorted set of job ids scored by creation time (ms): all jobs, or by a field."""
        return f"{self.prefix}:idx:all" if field == "all" else f"{self.prefix}:idx:{field}:{value}"

    @property
    def schedule(self) -> str:
        """Sorted set: job ids waiting for a retry, scored by due time."""
        return f"{self.prefix}:schedule"

    @property
    def dispatching(self) -> str:
        """Sorted set: job ids taken off the schedule, scored by when to resend them."""
        return f"{self.prefix}:dispatching"

    @property
    def running(self) -> str:
        """Sorted set: running job ids scored by lease expiry."""
        return f"{self.prefix}:running"

    @property
    def expiry(self) -> str:
        """Sorted set: finished job ids scored by when their record expires."""
        return f"{self.prefix}:expiry"

    def idempotency(self, profile: str, key: str) -> str:
        """String: the job id that holds an idempotency key."""
        return f"{self.prefix}:idem:{profile}:{key}"

    def worker(self, name: str) -> str:
        """Hash with a TTL: a live worker's heartbeat."""
        return f"{self.prefix}:worker:{name}"

    @property
    def workers(self) -> str:
        """Sorted set: worker names scored by last heartbeat."""
        return f"{self.prefix}:workers"

    def slots(self, profile: str) -> str:
        """Sorted set: job ids holding a concurrency slot of a profile, scored by expiry."""
        return f"{self.prefix}:slots:{profile}"

    def limits(self, profile: str) -> str:
        """Hash: a profile's global limits (concurrency, rate_count, rate_per_ms)."""
        return f"{self.prefix}:limits:{profile}"

    def rate(self, profile: str) -> str:
        """Sorted set: start times inside the current rate window of a profile."""
        return f"{self.prefix}:rate:{profile}"

    def counters(self) -> str:
        """Hash: lifetime counters for /metrics (field "<what>|profile|backend|queue|task")."""
        return f"{self.prefix}:counters"

    @property
    def active_workflows(self) -> str:
        """Sorted set: ids of workflows not yet finished, scored by creation time (ms)."""
        return f"{self.prefix}:wfidx:active"

    @property
    def minutes(self) -> str:
        """Hash: the event counters' totals, sampled once a minute (field: epoch minute)
        by the API for the dashboard's per-minute chart; kept two hours."""
        return f"{self.prefix}:minutes"
