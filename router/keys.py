"""Every Redis key taskrouter writes, in one place.

The engines' own keys (RQ's ``rq:*``, kombu's queues) are named by the engines; their
prefixes are set from ``Settings.rq_key_prefix`` and ``Settings.celery_key_prefix``.

The Lua scripts get the same names from a table rendered from this class (lua_keys.py):
a key is the prefix and the parameters joined by literal text, nothing computed.
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
        return self.index_all if field == "all" else self.index_of(field, value)

    @property
    def index_all(self) -> str:
        """Sorted set: every job id, scored by creation time (ms)."""
        return f"{self.prefix}:idx:all"

    def index_of(self, field: str, value: str) -> str:
        """Sorted set: ids of the jobs whose record has ``field`` = ``value``, by creation."""
        return f"{self.prefix}:idx:{field}:{value}"

    @property
    def schedule(self) -> str:
        """Sorted set: job ids waiting for a retry, scored by due time."""
        return f"{self.prefix}:schedule"

    def dispatching(self, engine: str) -> str:
        """Sorted set: ids of an engine's queued jobs to send, scored by when to (re)send
        them. One per engine ("celery", "rq": the record's backend), so that a process
        sends only its engines' jobs and leaves the others' to their own processes."""
        return f"{self.prefix}:dispatching:{engine}"

    @property
    def legacy_dispatching(self) -> str:
        """Sorted set: the one dispatching set of versions before the per-engine sets;
        take_due moves what it finds there into the engines' sets."""
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

    def periodic(self, name: str) -> str:
        """Hash: one schedule's state (last_tick: the last tick taken, ms; last_job,
        last_run: the last tick that made a job, its id and when it was made)."""
        return f"{self.prefix}:periodic:{name}"

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
        """Hash: a profile's limits (concurrency, rate_count, rate_per_ms; key_concurrency,
        key_rate_count, key_rate_per_ms and keyed for per_key), and "paused": until when
        (ms) its jobs wait after a RetryAfter with pause: profile, or "manual"."""
        return f"{self.prefix}:limits:{profile}"

    def rate(self, profile: str) -> str:
        """Sorted set: start times inside the current rate window of a profile."""
        return f"{self.prefix}:rate:{profile}"

    def rate_used(self, profile: str) -> str:
        """String: the units that weighted starts inside a profile's rate window took
        beyond one each (``rate`` holds one entry per start, ``<id>:<attempt>:<cost>``)."""
        return f"{self.prefix}:rateused:{profile}"

    def key_slots(self, profile: str, limit_key: str) -> str:
        """Sorted set: job ids of one limit key holding a slot of its per-key concurrency."""
        return f"{self.prefix}:kslots:{profile}:{limit_key}"

    def key_rate(self, profile: str, limit_key: str) -> str:
        """Sorted set: starts inside the rate window of one limit key (as ``rate``)."""
        return f"{self.prefix}:krate:{profile}:{limit_key}"

    def key_rate_used(self, profile: str, limit_key: str) -> str:
        """String: the same as ``rate_used`` for one limit key."""
        return f"{self.prefix}:krateused:{profile}:{limit_key}"

    def waiting(self, profile: str, limit_key: str) -> str:
        """Sorted set: ids of one limit key's jobs waiting for a limit, by creation time."""
        return f"{self.prefix}:kwait:{profile}:{limit_key}"

    def waiting_keys(self, profile: str) -> str:
        """Sorted set: the limit keys of a profile with waiting jobs, scored by when each
        was last given a start (0: never), so that starts go round the keys."""
        return f"{self.prefix}:kwaitkeys:{profile}"

    def waiting_credits(self, profile: str) -> str:
        """Hash: per limit key with a weight, the starts it had in its current turn."""
        return f"{self.prefix}:kwaitcredits:{profile}"

    @property
    def fair_profiles(self) -> str:
        """Set: the profiles with jobs waiting in per-key queues (``waiting``)."""
        return f"{self.prefix}:fair"

    def spend(self, profile: str, window: str) -> str:
        """String: what a profile's jobs charged in one budget window (its number: ms
        since the epoch // the window's length), kept two windows."""
        return f"{self.prefix}:spend:{profile}:{window}"

    def key_spend(self, profile: str, limit_key: str, window: str) -> str:
        """String: what one limit key's jobs charged in one budget window."""
        return f"{self.prefix}:kspend:{profile}:{window}:{limit_key}"

    def paused_key(self, profile: str, limit_key: str) -> str:
        """String: until when (ms) the jobs of one limit key of a profile wait."""
        return f"{self.prefix}:pausedkey:{profile}:{limit_key}"

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

    def runtimes(self, profile: str) -> str:
        """List: the run times (ms) of a profile's last attempts, newest first, capped at
        RUNTIME_SKETCH_SIZE (finish.lua); what adaptive routing and ``policy advise`` read."""
        return f"{self.prefix}:runtimes:{profile}"

    def task_runtimes(self, profile: str, task: str) -> str:
        """List: the same, for one task of a profile."""
        return f"{self.prefix}:runtimes:{profile}:{task}"

    def runtime_tasks(self, profile: str) -> str:
        """Set: the tasks of a profile that have a run time sketch (task_runtimes)."""
        return f"{self.prefix}:runtime-tasks:{profile}"

    def route(self, profile: str) -> str:
        """Hash: where adaptive routing sends a profile since its last switch (backend,
        lane, queue, long, since_ms, reason, switches)."""
        return f"{self.prefix}:route:{profile}"
