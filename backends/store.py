"""Job records in Redis: creation, the state transitions, and reads.

This module (with ``flow_store.py``, the part a running attempt writes of itself) is the
only Python code that reads or writes a job record (workflow records are
``workflow_store.py``'s, on the same client and scripts). Every transition is one Lua
script, so that two workers, a janitor and a cancel racing on the same job see one order
of events: a job is claimed once per dispatch, finished once per claim, and a late
finisher of a canceled or reaped attempt is ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from taskrouter.keys import Keys
from taskrouter.policy import Budget
from taskrouter.record import INDEXED
from taskrouter.settings import (
    RUNTIME_SKETCH_SIZE,
    RUNTIME_SKETCH_TTL,
    SWEEP_BATCH,
    SWEEP_BATCHES,
)
from taskrouter.states import CancelStatus, ClaimStatus, FinishStatus, Outcome

from .connection import PerProcess
from .errors import engine_errors
from .flow_store import FlowRecords
from .scripts import SCRIPTS


def now_ms() -> int:
    return int(time.time() * 1000)


def new_job_id() -> str:
    """A job id that sorts by creation time: 12 hex digits of ms, then 16 random ones.

    Only letters and digits, so it is a valid RQ job id and Celery task id as it is.
    """
    return f"{now_ms():012x}{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True, slots=True)
class Claim:
    status: ClaimStatus
    job_id: str = ""
    token: str = ""
    task: str = ""
    payload: str = ""
    attempts: int = 0
    max_attempts: int = 1
    delays: tuple[float, ...] = ()
    workflow_id: str = ""
    detail: str = ""
    profile: str = ""
    limit_key: str = ""

    def retry_delay(self) -> float:
        """Seconds before the next attempt after this one failed (the last value repeats)."""
        if not self.delays:
            return 0.0
        return self.delays[min(self.attempts, len(self.delays)) - 1]


Released = tuple[str, str, str, str, str]  # id, backend, queue, dispatch, profile


class JobStore(FlowRecords):
    """Job records of one key prefix on one Redis.

    The client is rebuilt in a forked child (RQ's work-horse, Celery's pool children):
    a connection pool inherited from a parent whose other threads held its lock at the
    fork would deadlock the child on first use. ``clock`` gives "now" in ms to every
    script (tests age records with it instead of sleeping).
    """

    def __init__(self, url: str, keys: Keys, *, clock: Callable[[], int] = now_ms) -> None:
        self.url = url
        self.keys = keys
        self.clock = clock
        self._scripts: dict[str, Any] = {}
        self._clients = PerProcess(url, decode_responses=True, setup=self._register_scripts)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, clock: Callable[[], int] = now_ms) -> JobStore:
        return cls(url, Keys(prefix), clock=clock)

    @property
    def client(self) -> Any:  # redis.Redis with decode_responses=True: str replies
        return self._clients.get()

    def _register_scripts(self, client: redis.Redis) -> None:
        self._scripts = {n: client.register_script(t) for n, t in SCRIPTS.items()}

    def run(self, name: str, *args: Any) -> Any:
        """Run script ``name`` (EVALSHA, loading it again after a Redis restart)."""
        client = self.client
        with engine_errors():
            return self._scripts[name](args=[self.keys.prefix, *args], client=client)

    # -- creation ---------------------------------------------------------------------

    @staticmethod
    def create_args(
        job_id: str,
        fields: Mapping[str, Any],
        *,
        created_ms: int,
        unfinished_ttl_ms: int,
        idempotency_key: str = "",
        idempotency_ttl_ms: int = 0,
    ) -> list[Any]:
        # One flat list in one pass (this runs on every enqueue).
        return [
            job_id,
            created_ms,
            unfinished_ttl_ms,
            idempotency_key,
            idempotency_ttl_ms,
            *[x for kv in fields.items() if kv[1] is not None for x in kv],
        ]

    def create(self, args: Sequence[Any]) -> str:
        """Write a record (and take its idempotency key); returns the key's holder id."""
        return str(self.run("create", *args))

    def queue_create(self, pipe: Pipeline, args: Sequence[Any], *, cached: bool = False) -> None:
        """Add the record write to a pipeline or MULTI.

        EVAL by default: no script cache is needed, so the write cannot be skipped while
        the engine's commands queued after it run. ``cached`` sends EVALSHA instead: 40
        bytes in place of the script's 3 KB, which cost RQ's enqueue rate 10-20% on a
        2-core machine. The caller must have run ``load_create`` and must handle NoScriptError
        (a server that lost its script cache since) after the pipeline ran. The record's
        key goes in KEYS[1], which the scripts ignore: kombu's key-prefixing client
        prefixes the first key of an EVALSHA, which with no keys would be ARGV[1].
        """
        if cached:
            sha = self._scripts["create"].sha if not self._clients.fresh else self.load_create()
            key = self.keys.job(str(args[0]))
            pipe.execute_command("EVALSHA", sha, 1, key, self.keys.prefix, *args)
        else:
            pipe.execute_command("EVAL", SCRIPTS["create"], 0, self.keys.prefix, *args)

    @staticmethod
    def created(results: Sequence[Any]) -> bool:
        """Read the replies of a pipeline that ran ``queue_create`` first: False when the
        record was not written because Redis lost its script cache (NOSCRIPT; the
        commands after it ran all the same), True when every command succeeded. Any
        other error is raised (mapped by backends/errors.py)."""
        if isinstance(results[0], NoScriptError):
            return False
        JobStore.raise_failed(results)
        return True

    @staticmethod
    def raise_failed(results: Sequence[Any]) -> None:
        """Raise the first error among a pipeline's replies, mapped."""
        for result in results:
            if isinstance(result, Exception):
                with engine_errors():
                    raise result

    def load_create(self) -> str:
        """Put the create script in the server's script cache; returns its SHA1."""
        client = self.client
        with engine_errors():
            return str(client.script_load(SCRIPTS["create"]))

    def delete(self, job_id: str, idempotency_key: str = "") -> None:
        """Undo a create whose engine enqueue failed."""
        key = self.keys.job(job_id)
        with engine_errors():
            record = self.client.hgetall(key)
            pipe = self.client.pipeline()
            pipe.delete(key)
            pipe.zrem(self.keys.index(), job_id)
            for field in INDEXED:
                pipe.zrem(self.keys.index(field, record.get(field, "")), job_id)
            # The entry create.lua wrote for the sweep (see index_new in common.lua).
            f = [record.get(name, "") for name in ("profile", "backend", "task")]
            member = f"{job_id}|{f[0]}|{f[1]}|*|{f[2]}"
            pipe.zrem(self.keys.expiry, member)
            pipe.zrem(self.keys.schedule, job_id)
            if idempotency_key:
                pipe.delete(idempotency_key)
            pipe.execute()

    # -- reads ------------------------------------------------------------------------

    def read(self, job_id: str) -> dict[str, str] | None:
        """The record, or None; one round trip."""
        with engine_errors():
            record = self.client.hgetall(self.keys.job(job_id))
        return record or None

    def exists(self, job_id: str) -> bool:
        with engine_errors():
            return bool(self.client.exists(self.keys.job(job_id)))

    def fields(self, job_id: str, *names: str) -> list[str | None]:
        """Some fields of a record (None where absent), in one round trip."""
        with engine_errors():
            return list(self.client.hmget(self.keys.job(job_id), names))

    # -- transitions ------------------------------------------------------------------

    def claim(
        self, job_id: str, dispatch: int | str, worker: str, token: str, lease_ms: int
    ) -> Claim:
        r = self.run("claim", job_id, dispatch, worker, self.clock(), lease_ms, token)
        if r[0] != "ok":
            return Claim(status=r[0], job_id=job_id, detail=r[1] if len(r) > 1 else "")
        return Claim(
            status="ok",
            job_id=job_id,
            token=token,
            task=r[1],
            payload=r[2],
            attempts=int(r[3]),
            max_attempts=int(r[4]),
            delays=tuple(json.loads(r[5])) if r[5] else (),
            workflow_id=r[6],
            profile=r[7],
            limit_key=r[8],
        )

    def finish(
        self,
        job_id: str,
        token: str,
        outcome: Outcome,
        value: str,
        *,
        due_ms: int = 0,
        history: Mapping[str, Any],
        pause: str = "none",
        max_waits: int = 0,
    ) -> tuple[FinishStatus, str]:
        """Record the end of the attempt holding ``token``: ("ok", new state), or
        ("lost", state) when the attempt no longer owns the job.

        Outcome "later" (a RetryAfter): the job waits until ``due_ms`` without using an
        attempt, and so does every job of its key or profile when ``pause`` says so;
        past ``max_waits`` such waits it fails instead."""
        entry = json.dumps(history, separators=(",", ":"))
        r = self.run(
            "finish",
            *(job_id, token, self.clock(), outcome, value, due_ms, entry, pause, max_waits),
            *(RUNTIME_SKETCH_SIZE, RUNTIME_SKETCH_TTL * 1000),
        )
        return cast(FinishStatus, r[0]), r[1]

    def renew(self, leases: Mapping[str, str], lease_ms: int) -> list[str]:
        """Extend the leases of {job_id: token}; returns the ids this process no longer owns."""
        if not leases:
            return []
        flat = [x for pair in leases.items() for x in pair]
        return list(self.run("renew", self.clock(), lease_ms, *flat))

    def take_due(self, limit: int, grace_ms: int, engine: str) -> list[Released]:
        """Due jobs of ``engine`` to send now: (id, backend, queue, dispatch, profile).
        Due jobs of other engines are left, due, for their own senders."""
        flat = self.run("take_due", self.clock(), limit, grace_ms, engine)
        return [cast(Released, tuple(flat[i : i + 5])) for i in range(0, len(flat), 5)]

    def dispatched(self, job_id: str, engine: str, pipe: Pipeline | None = None) -> None:
        """A job taken by take_due reached its engine: it needs no resend (on ``pipe``,
        with the send, when given)."""
        if pipe is not None:
            pipe.zrem(self.keys.dispatching(engine), job_id)
            return
        with engine_errors():
            self.client.zrem(self.keys.dispatching(engine), job_id)

    def due_now(self, job_id: str, engine: str) -> None:
        """Make a job taken by take_due due again at once, for its engine's senders (this
        process cannot reach that engine)."""
        with engine_errors():
            self.client.zadd(self.keys.dispatching(engine), {job_id: self.clock()}, xx=True)

    def cancel(self, job_id: str) -> tuple[CancelStatus, str, str, int]:
        """Cancel a job: (status, state before or when finished, backend, dispatch)."""
        r = list(self.run("cancel", job_id, self.clock()))
        if r[0] != "ok":
            return cast(CancelStatus, r[0]), r[1] if len(r) > 1 else "", "", 0
        return "ok", r[1], r[2], int(r[3] or 1)

    def reap(self, limit: int = 100) -> list[tuple[str, str]]:
        """Fail or retry jobs whose lease lapsed: (id, outcome)."""
        flat = self.run("reap", self.clock(), limit)
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def requeue_stale(self, older_than_s: float, limit: int = 200) -> list[str]:
        """Give Celery jobs queued longer than ``older_than_s`` a new dispatch (see
        requeue_stale.lua); their engine's senders send them."""
        return list(self.run("requeue_stale", self.clock(), int(older_than_s * 1000), limit))

    def requeue_held(self, held: Sequence[tuple[str, int]]) -> list[str]:
        """Give each still-queued Celery job of ``held`` (job id, dispatch: messages a
        worker reserved) a new dispatch now (see requeue_held.lua)."""
        if not held:
            return []
        return list(self.run("requeue_held", self.clock(), *[x for pair in held for x in pair]))

    def reconcile(
        self, older_ms: int, limit: int, cursor: str, rq_keys: Sequence[str], max_queue: int
    ) -> tuple[str, list[str], list[str], list[tuple[str, int, str]]]:
        """One step of the walk over old queued jobs (see reconcile.lua): (next cursor,
        RQ jobs canceled, RQ jobs given a new dispatch, Celery jobs to look for as
        (id, dispatch, queue)). ``rq_keys``: RQ's key namespaces (reconcile.RQKeys)."""
        r = self.run("reconcile", self.clock(), older_ms, limit, cursor, max_queue, *rq_keys)
        celery = [(r[3][i], int(r[3][i + 1]), r[3][i + 2]) for i in range(0, len(r[3]), 3)]
        return r[0], list(r[1]), list(r[2]), celery

    def requeue_missing(self, missing: Sequence[tuple[str, int]], older_ms: int) -> list[str]:
        """Give each Celery job of ``missing`` (job id, dispatch: no message found) that is
        still queued at that dispatch a new dispatch (see requeue_missing.lua)."""
        if not missing:
            return []
        flat = [x for pair in missing for x in pair]
        return list(self.run("requeue_missing", self.clock(), older_ms, *flat))

    def cancel_outside(self, job_id: str, dispatch: int, message: str) -> str:
        """End a job canceled through its engine's own tools, if ``dispatch`` is still its
        current one; returns the script's status (see cancel_outside.lua)."""
        return str(self.run("cancel_outside", job_id, dispatch, self.clock(), message)[0])

    def sweep(self, limit: int = SWEEP_BATCH, batches: int = SWEEP_BATCHES) -> int:
        """Drop index entries of records that have expired; returns how many jobs.

        One script call looks at ``limit`` expiry entries at most (a short call, however
        many jobs expired at once); calls follow while whole batches come back, up to
        ``batches`` of them, and the next pass goes on where this one stopped."""
        swept = 0
        for _ in range(batches):
            looked, n = self.run("sweep", self.clock(), limit)
            swept += int(n)
            if int(looked) < limit:
                break
        return swept

    def next_attempt(self, job_id: str, *, limited: bool, fallback_ms: int) -> tuple[int, int]:
        """(when the next attempt of a canvas member may start, ms; its dispatch number).

        After a failed attempt finish.lua scheduled the retry ``fallback_ms`` late (the
        canvas brings the retry itself; the schedule is a fallback). After a claim over
        a global limit, claim.lua scheduled it for when the limit allows: that becomes
        the late fallback, as for a retry (XX: unless already taken off)."""
        key = self.keys.job(job_id)
        with engine_errors():
            due_raw, dispatch = self.client.hmget(key, "due_at", "dispatch")
            due = int(due_raw or 0)
            if limited:
                self.client.zadd(self.keys.schedule, {job_id: due + fallback_ms}, xx=True)
            else:
                due -= fallback_ms
        return due, int(dispatch or 1)

    def publish_limits(
        self,
        limits: Mapping[str, tuple[int | None, int | None, float | None]],
        per_key: Mapping[str, tuple[int | None, int | None, float | None]] | None = None,
        budgets: Mapping[str, Budget] | None = None,
        key_pauses: Collection[str] = (),
        weights: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Write each profile's global limits (concurrency, rate count, rate window s),
        which claim and take_due enforce; a profile without limits has its entry removed.
        A profile in ``per_key`` (it has a per_key section) gets its per-key limits too,
        and its jobs over a limit wait in per-key lines (fair share)."""
        client = self.client
        per_key = per_key or {}
        with engine_errors():
            pipe = client.pipeline(transaction=False)
            for profile, (cap, count, per) in limits.items():
                key = self.keys.limits(profile)
                pipe.hdel(key, *LIMIT_FIELDS)
                fields = _limit_fields("", cap, count, per)
                if profile in per_key:
                    fields.update(_limit_fields("key_", *per_key[profile]), keyed=1)
                if (weights or {}).get(profile):  # fair-share turns longer than one start
                    fields["weights"] = json.dumps(dict((weights or {})[profile]))
                if profile in key_pauses:  # its RetryAfters pause one limit key
                    fields["key_pauses"] = 1
                if (budget := (budgets or {}).get(profile)) is not None:
                    fields.update(budget=repr(budget.limit), budget_per_ms=int(budget.per * 1000))
                    if budget.per_key is not None:
                        fields["key_budget"] = repr(budget.per_key)
                    if budget.price is not None:
                        fields["budget_price"] = repr(budget.price)
                if fields:
                    pipe.hset(key, mapping=fields)
            pipe.execute()

    def ping(self) -> None:
        with engine_errors():
            self.client.ping()

    def close(self) -> None:
        self._clients.close()


LIMIT_FIELDS = (
    *("concurrency", "rate_count", "rate_per_ms", "keyed"),
    *("key_concurrency", "key_rate_count", "key_rate_per_ms"),
    *("budget", "budget_per_ms", "key_budget", "budget_price", "key_pauses", "weights"),
)  # not "paused" (a pause outlives a restart) nor "weighted" (the logs' units)


def _limit_fields(
    head: str, cap: int | None, count: int | None, per: float | None
) -> dict[str, int | str]:
    fields = {
        f"{head}concurrency": cap,
        f"{head}rate_count": count,
        f"{head}rate_per_ms": None if per is None else int(per * 1000),
    }
    return {k: v for k, v in fields.items() if v is not None}


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key of a key prefix: taskrouter's (``<prefix>:``) and, for a custom
    prefix, the engines' (``<prefix>-rq:``, ``<prefix>-celery:``). Returns how many. For
    test runs, benchmarks and the demo on a shared Redis; never a FLUSHDB."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        with engine_errors():
            for pattern in (f"{prefix}:*", f"{prefix}-rq:*", f"{prefix}-celery:*"):
                batch = list(client.scan_iter(match=pattern, count=1000))
                for i in range(0, len(batch), 500):
                    deleted += int(client.delete(*batch[i : i + 500]))
    finally:
        client.close()
    return deleted
