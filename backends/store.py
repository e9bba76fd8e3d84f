"""Job records in Redis: creation, the state transitions, and reads.

Every transition is one Lua script, so that two workers, a janitor and a cancel racing
on the same job see one order of events: a job is claimed once per dispatch, finished
once per claim, and a late finisher of a canceled or reaped attempt is ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from taskrouter.errors import BackendUnavailable, DamagedRecord
from taskrouter.keys import Keys

from .connection import PerProcess

_SCRIPT_NAMES = (
    "create",
    "claim",
    "finish",
    "renew",
    "take_due",
    "cancel",
    "reap",
    "sweep",
    "requeue_stale",
    "requeue_held",
)


def _load_scripts() -> dict[str, str]:
    lua = Path(__file__).with_name("lua")
    common = (lua / "common.lua").read_text()
    return {n: common + "\n" + (lua / f"{n}.lua").read_text() for n in _SCRIPT_NAMES}


SCRIPTS = _load_scripts()


def now_ms() -> int:
    return int(time.time() * 1000)


def new_job_id() -> str:
    """A job id that sorts by creation time: 12 hex digits of ms, then 16 random ones.

    Only letters and digits, so it is a valid RQ job id and Celery task id as it is.
    """
    return f"{now_ms():012x}{uuid.uuid4().hex[:16]}"


@contextmanager
def redis_errors(component: str = "redis") -> Iterator[None]:
    """Map redis-py connection errors to BackendUnavailable."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BackendUnavailable(component, str(exc) or type(exc).__name__) from exc
    except redis.ResponseError as exc:
        if "LOADING" in str(exc) or "READONLY" in str(exc):
            raise BackendUnavailable(component, str(exc)) from exc
        if str(exc).startswith("WRONGTYPE"):
            raise DamagedRecord(None, "a key holds another type than taskrouter writes") from exc
        raise


@dataclass(frozen=True, slots=True)
class Claim:
    status: str  # ok | missing | finished | stale | duplicate
    task: str = ""
    payload: str = ""
    attempts: int = 0
    max_attempts: int = 1
    delays: tuple[float, ...] = ()
    workflow_id: str = ""
    detail: str = ""


class JobStore:
    """Job records of one key prefix on one Redis.

    The client is rebuilt in a forked child (RQ's work-horse, Celery's pool children):
    a connection pool inherited from a parent whose other threads held its lock at the
    fork would deadlock the child on first use.
    """

    def __init__(self, url: str, keys: Keys) -> None:
        self.url = url
        self.keys = keys
        self._scripts: dict[str, Any] = {}
        self._clients = PerProcess(url, decode_responses=True, setup=self._register_scripts)

    @classmethod
    def from_url(cls, url: str, prefix: str) -> JobStore:
        return cls(url, Keys(prefix))

    @property
    def client(self) -> Any:  # redis.Redis with decode_responses=True: str replies
        return self._clients.get()

    def _register_scripts(self, client: redis.Redis) -> None:
        self._scripts = {n: client.register_script(t) for n, t in SCRIPTS.items()}

    def _run(self, name: str, *args: Any) -> Any:
        client = self.client
        with redis_errors():
            return self._scripts[name](args=[self.keys.prefix, *args], client=client)

    # -- creation ---------------------------------------------------------------------

    def create_args(
        self,
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
        return str(self._run("create", *args))

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
        other error is raised (connection errors as BackendUnavailable)."""
        if isinstance(results[0], NoScriptError):
            return False
        JobStore.raise_failed(results)
        return True

    @staticmethod
    def raise_failed(results: Sequence[Any]) -> None:
        """Raise the first error among a pipeline's replies (connection errors as
        BackendUnavailable)."""
        for result in results:
            if isinstance(result, Exception):
                with redis_errors():
                    raise result

    def load_create(self) -> str:
        """Put the create script in the server's script cache; returns its SHA1."""
        client = self.client
        with redis_errors():
            return str(client.script_load(SCRIPTS["create"]))

    def delete(self, job_id: str, idempotency_key: str = "") -> None:
        """Undo a create whose engine enqueue failed."""
        with redis_errors():
            record = self.client.hgetall(self.keys.job(job_id))
            pipe = self.client.pipeline()
            pipe.delete(self.keys.job(job_id))
            for field in ("all", "state", "profile", "backend", "task"):
                key = (
                    self.keys.index()
                    if field == "all"
                    else self.keys.index(field, record.get(field, ""))
                )
                pipe.zrem(key, job_id)
            pipe.zrem(self.keys.expiry, job_id)
            pipe.zrem(self.keys.schedule, job_id)
            if idempotency_key:
                pipe.delete(idempotency_key)
            pipe.execute()

    # -- reads ------------------------------------------------------------------------

    def read(self, job_id: str) -> dict[str, str] | None:
        """The record, or None; one round trip."""
        with redis_errors():
            record = self.client.hgetall(self.keys.job(job_id))
        return record or None

    def exists(self, job_id: str) -> bool:
        with redis_errors():
            return bool(self.client.exists(self.keys.job(job_id)))

    # -- transitions ------------------------------------------------------------------

    def claim(
        self, job_id: str, dispatch: int | str, worker: str, token: str, lease_ms: int
    ) -> Claim:
        r = self._run("claim", job_id, dispatch, worker, now_ms(), lease_ms, token)
        if r[0] != "ok":
            return Claim(status=r[0], detail=r[1] if len(r) > 1 else "")
        delays = tuple(json.loads(r[5])) if r[5] else ()
        return Claim(
            status="ok",
            task=r[1],
            payload=r[2],
            attempts=int(r[3]),
            max_attempts=int(r[4]),
            delays=delays,
            workflow_id=r[6],
        )

    def finish(
        self,
        job_id: str,
        token: str,
        outcome: str,
        value: str,
        *,
        due_ms: int = 0,
        history: Mapping[str, Any],
    ) -> tuple[str, str]:
        r = self._run(
            "finish",
            job_id,
            token,
            now_ms(),
            outcome,
            value,
            due_ms,
            json.dumps(history, separators=(",", ":")),
        )
        return r[0], r[1]

    def renew(self, leases: Mapping[str, str], lease_ms: int) -> list[str]:
        """Extend the leases of {job_id: token}; returns the ids this process no longer owns."""
        if not leases:
            return []
        flat = [x for pair in leases.items() for x in pair]
        return list(self._run("renew", now_ms(), lease_ms, *flat))

    def take_due(self, limit: int, grace_ms: int) -> list[tuple[str, str, str, str, str]]:
        """Due jobs to send: (id, backend, queue, dispatch, profile)."""
        flat = self._run("take_due", now_ms(), limit, grace_ms)
        return [tuple(flat[i : i + 5]) for i in range(0, len(flat), 5)]  # type: ignore[misc]

    def dispatched(self, job_id: str) -> None:
        with redis_errors():
            self.client.zrem(self.keys.dispatching, job_id)

    def cancel(self, job_id: str) -> list[str]:
        return list(self._run("cancel", job_id, now_ms()))

    def reap(self, limit: int = 100) -> list[tuple[str, str]]:
        """Fail or retry jobs whose lease lapsed: (id, outcome)."""
        flat = self._run("reap", now_ms(), limit)
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def requeue_stale(self, older_than_s: float, limit: int = 200) -> list[str]:
        """Give Celery jobs queued longer than ``older_than_s`` a new dispatch (see
        requeue_stale.lua); the janitor's pump sends them."""
        return list(self._run("requeue_stale", now_ms(), int(older_than_s * 1000), limit))

    def requeue_held(self, held: Sequence[tuple[str, int]]) -> list[str]:
        """Give each still-queued Celery job of ``held`` (job id, dispatch: messages a
        worker reserved) a new dispatch now (see requeue_held.lua); the pump sends them."""
        if not held:
            return []
        return list(self._run("requeue_held", now_ms(), *[x for pair in held for x in pair]))

    def sweep(self, limit: int = 500) -> int:
        """Drop index entries of records that have expired; returns how many jobs."""
        return int(self._run("sweep", now_ms(), limit))

    def publish_limits(
        self, limits: Mapping[str, tuple[int | None, int | None, float | None]]
    ) -> None:
        """Write each profile's global limits (concurrency, rate count, rate window s),
        which claim and take_due enforce; a profile without limits has its entry removed."""
        client = self.client
        with redis_errors():
            pipe = client.pipeline(transaction=False)
            for profile, (cap, count, per) in limits.items():
                key = self.keys.limits(profile)
                pipe.delete(key)
                fields = {
                    "concurrency": cap,
                    "rate_count": count,
                    "rate_per_ms": None if per is None else int(per * 1000),
                }
                fields = {k: v for k, v in fields.items() if v is not None}
                if fields:
                    pipe.hset(key, mapping=fields)
            pipe.execute()

    def ping(self) -> None:
        with redis_errors():
            self.client.ping()

    def close(self) -> None:
        self._clients.close()


class WorkerRegistry:
    """Worker heartbeats: who is alive, per engine."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def beat(self, engine: str, name: str) -> None:
        with redis_errors():
            self.store.client.zadd(self.store.keys.workers, {f"{engine}|{name}": now_ms()})

    def leave(self, engine: str, name: str) -> None:
        with redis_errors():
            self.store.client.zrem(self.store.keys.workers, f"{engine}|{name}")

    def alive(self, engine: str | None = None, within_ms: int = 15_000) -> list[str]:
        """Names of workers (of one engine, or all as "engine|name") seen lately."""
        with redis_errors():
            members = self.store.client.zrange(
                self.store.keys.workers, now_ms() - within_ms, "+inf", byscore=True
            )
        if engine is None:
            return list(members)
        return [m.split("|", 1)[1] for m in members if m.startswith(engine + "|")]
