"""The runtime: policy, job store and both engine adapters, wired from Settings.

One per process (``router._runtime``); workers, the API and tests build their own.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskrouter import codec
from taskrouter.derive import Derived, ProfileSettings, celery_queues, derive, rq_queues
from taskrouter.errors import BackendUnavailable, JobNotFound, JobStateConflict, TaskrouterError
from taskrouter.job import Job
from taskrouter.policy_file import load_policy
from taskrouter.registry import CallOptions, Task
from taskrouter.settings import DISPATCH_GRACE, UNFINISHED_TTL, Settings

from .store import JobStore, now_ms, redis_errors

if TYPE_CHECKING:
    from .base import Backend
    from .celery_backend import CeleryBackend
    from .rq_backend import RQBackend

log = logging.getLogger("taskrouter")


def configure_rq_prefix(settings: Settings) -> None:
    """RQ reads its key prefix at import; set it first (and refuse a late change)."""
    if settings.rq_key_prefix is None:
        return
    current = os.environ.get("RQ_KEY_PREFIX")
    if current not in (None, settings.rq_key_prefix):
        raise TaskrouterError(
            f"RQ_KEY_PREFIX is {current!r} but TASKROUTER_KEY_PREFIX wants "
            f"{settings.rq_key_prefix!r}: unset one of them"
        )
    os.environ["RQ_KEY_PREFIX"] = settings.rq_key_prefix
    import sys

    if "rq.defaults" in sys.modules:
        from rq.defaults import RQ_KEY_PREFIX

        if settings.rq_key_prefix != RQ_KEY_PREFIX:
            raise TaskrouterError("rq was imported before taskrouter could set RQ_KEY_PREFIX")


@dataclass(frozen=True, slots=True)
class Planned:
    """A job whose record is built but not yet written (Runtime.plan)."""

    ps: ProfileSettings
    job_id: str
    fields: dict[str, Any]
    create: list[Any]  # JobStore.create_args
    idem: str  # the idempotency key's Redis key, or ""
    delayed: bool


class Runtime:
    """What a process needs to enqueue, read and control jobs."""

    def __init__(self, settings: Settings, derived: Derived) -> None:
        configure_rq_prefix(settings)
        from .celery_backend import CeleryBackend, make_app
        from .rq_backend import RQBackend

        self.settings = settings
        self.derived = derived
        self.store = JobStore.from_url(settings.redis_url, settings.key_prefix)
        self.celery_app = make_app(settings, derived)
        self.celery: CeleryBackend = CeleryBackend(
            self.celery_app, self.store, celery_queues(derived)
        )
        self.rq: RQBackend = RQBackend(settings.redis_url, self.store, rq_queues(derived))
        self.backends: dict[str, Backend] = {"celery": self.celery, "rq": self.rq}

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or Settings.from_env()
        return cls(settings, derive(load_policy(settings.policy_path)))

    # -- enqueue ----------------------------------------------------------------------

    def profile_settings(self, task: Task[Any, Any]) -> ProfileSettings:
        try:
            return self.derived.profiles[task.profile]
        except KeyError:
            known = ", ".join(sorted(self.derived.profiles))
            raise TaskrouterError(
                f"task {task.name!r} uses profile {task.profile!r}, which "
                f"{self.derived.policy.path} does not define (profiles: {known})"
            ) from None

    def enqueue(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: CallOptions,
        *,
        workflow_id: str | None = None,
    ) -> Job:
        return self.submit(self.plan(task, args, kwargs, options, workflow_id=workflow_id))

    def plan(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: CallOptions,
        *,
        workflow_id: str | None = None,
    ) -> Planned:
        """A job's record, ready to write: no I/O. Refuses bad arguments."""
        ps = self.profile_settings(task)
        payload = codec.encode_call(args, kwargs)  # refuses bad arguments before any write
        created = now_ms()
        # new_job_id()'s format (12 hex digits of ms, then 16 random ones) from this
        # call's clock reading and os.urandom: uuid4 costs 2 us more per enqueue.
        job_id = f"{created:012x}{os.urandom(8).hex()}"
        delayed = bool(options.delay)
        fields: dict[str, Any] = {
            "id": job_id,
            "task": task.name,
            "profile": ps.profile,
            "backend": ps.backend,
            "queue": ps.queue,
            "state": "scheduled" if delayed else "queued",
            "attempts": 0,
            "max_attempts": ps.max_attempts,
            "dispatch": 1,
            "created_at": created,
            "queued_at": created,
            "payload": payload,
            "keep_ms": ps.keep_results * 1000,
            "delays": _delays_json(ps.retries.backoff),
            "idempotency_key": options.idempotency_key,
            "workflow_id": workflow_id,
            "due_at": created + int((options.delay or 0) * 1000) if delayed else None,
        }
        idem = (
            self.store.keys.idempotency(ps.profile, options.idempotency_key)
            if options.idempotency_key
            else ""
        )
        create = self.store.create_args(
            job_id,
            fields,
            created_ms=created,
            unfinished_ttl_ms=UNFINISHED_TTL * 1000,
            idempotency_key=idem,
            idempotency_ttl_ms=ps.keep_results * 1000,
        )
        return Planned(ps, job_id, fields, create, idem, delayed)

    def submit(self, planned: Planned, *, maybe_written: bool = False) -> Job:
        """Write a planned job's record and send it to its engine.

        ``maybe_written``: an earlier try (the API's, on its own connection) may have
        written the record and sent the message before its connection broke. The record
        is then written only if missing, and the message is sent again: a second copy
        of a dispatch runs nothing (it is refused at claim).
        """
        ps, job_id, create = planned.ps, planned.job_id, planned.create
        backend = self.backends[ps.backend]
        if planned.idem or planned.delayed:
            holder = self.store.create(create)
            if holder != job_id:
                return self.get_job(holder)
            if not planned.delayed:
                try:
                    backend.send(job_id, 1, ps)
                except BackendUnavailable:
                    self.store.delete(job_id, planned.idem)
                    raise
        elif maybe_written and self.store.exists(job_id):
            backend.send(job_id, 1, ps)
        else:
            backend.send(job_id, 1, ps, create=create)
        return self.job_of(planned)

    def job_of(self, planned: Planned) -> Job:
        """The Job of a planned job as its record says once written."""
        return Job.from_record(
            {k: str(v) for k, v in planned.fields.items() if v is not None}, self
        )

    def celery_message(self, planned: Planned) -> tuple[str, str] | None:
        """The queue key and message of a planned Celery job, where one round trip on any
        client can write its record and send it (CeleryBackend.filled): no idempotency
        key, no delay, a learned message. None for every other job."""
        if planned.ps.backend != "celery" or planned.idem or planned.delayed:
            return None
        return self.celery.filled(planned.job_id, 1, planned.ps)

    # -- reads and control ------------------------------------------------------------

    def read_record(self, job_id: str) -> dict[str, str] | None:
        return self.store.read(job_id)

    def get_job(self, job_id: str) -> Job:
        record = self.store.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return Job.from_record(record, self, job_id)

    def cancel_job(self, job_id: str) -> dict[str, str]:
        r = self.store.cancel(job_id)
        if r[0] == "missing":
            raise JobNotFound(job_id)
        if r[0] == "finished":
            raise JobStateConflict(f"job {job_id} already finished ({r[1]}); nothing to cancel")
        previous, backend, dispatch = r[1], r[2], int(r[3] or 1)
        if previous in ("queued", "running") and backend in self.backends:
            try:
                self.backends[backend].stop(job_id, dispatch, running=previous == "running")
            except BackendUnavailable as exc:
                log.warning("job %s canceled in its record; engine stop failed: %s", job_id, exc)
        record = self.store.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def pump(self, limit: int = 200, grace_ms: int = int(DISPATCH_GRACE * 1000)) -> int:
        """Send due retries and delayed jobs to their engines; returns how many."""
        sent = 0
        for job_id, backend, queue, dispatch, profile in self.store.take_due(limit, grace_ms):
            ps = self.derived.profiles.get(profile)
            if ps is None or backend not in self.backends:
                # Left in the dispatching set: a process with the right policy sends it.
                log.error(
                    "job %s: profile %r / backend %r unknown to this policy",
                    job_id,
                    profile,
                    backend,
                )
                continue
            if ps.queue != queue:
                ps = _with_queue(ps, queue)
            self.backends[backend].send(job_id, int(dispatch), ps, redispatch=True)
            sent += 1
        return sent

    def requeue_held(self, before: float) -> list[str]:
        """Give each queued Celery job whose message a worker holds reserved (delivered at
        or before ``before``, epoch seconds) a new dispatch, which the pump sends: run
        when a Celery worker died, whose reserved messages kombu would restore only after
        the visibility window. Returns the job ids."""
        return self.store.requeue_held(self.celery.held(before))

    def publish_limits(self) -> None:
        """Make this policy's global limits the ones every worker enforces."""
        self.store.publish_limits(
            {
                name: (
                    ps.concurrency,
                    ps.rate_limit.count if ps.rate_limit else None,
                    ps.rate_limit.per if ps.rate_limit else None,
                )
                for name, ps in self.derived.profiles.items()
            }
        )

    def ping(self) -> None:
        with redis_errors():
            self.store.ping()

    def close(self) -> None:
        self.store.close()
        self.rq.close()
        self.celery.close()

    # -- retry (the API's POST /jobs/{id}/retry) --------------------------------------

    def retry_job(self, job_id: str) -> Job:
        """A new attempt of a failed or canceled job: a NEW job with the same task,
        arguments and profile, whose record names the old one in ``retry_of``.

        Retrying the same job again returns that same new job while its record lives
        (the idempotency key ``retry-of:<id>``), so a client that repeats the request
        after a lost answer does not run the task twice. The original's own idempotency
        key is not reused: it still names the original. JobStateConflict unless the job
        is failed or canceled.
        """
        from taskrouter.states import CANCELED, FAILED

        record = self.store.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        state, profile = record.get("state", ""), record.get("profile", "")
        if state not in (FAILED, CANCELED):
            raise JobStateConflict(
                f"job {job_id} is {state}: only a failed or canceled job can be retried"
            )
        if profile not in self.derived.profiles:
            raise JobStateConflict(
                f"job {job_id} ran under profile {profile!r}, which "
                f"{self.derived.policy.path} no longer defines"
            )
        args, kwargs = codec.decode_call(record.get("payload", ""))

        def remote_only(*args: Any, **kwargs: Any) -> Any:
            raise TypeError("this task is known here only by name: enqueue it")

        # The record's task name and profile, not the registry's: the retry runs what the
        # job ran, even from a process that does not import the task (workers look it up).
        same = Task(remote_only, name=record["task"], profile=profile)
        job = self.enqueue(same, args, kwargs, CallOptions(idempotency_key=f"retry-of:{job_id}"))
        with redis_errors():
            # The new record exists (enqueue wrote it, with a TTL of days): no stray key.
            self.store.client.hsetnx(self.store.keys.job(job.id), "retry_of", job_id)
        return job


@functools.lru_cache(maxsize=256)
def _delays_json(backoff: tuple[float, ...]) -> str | None:
    """A profile's retry delays as the record stores them, encoded once per profile
    rather than on every enqueue."""
    return json.dumps(backoff) if backoff else None


def _with_queue(ps: ProfileSettings, queue: str) -> ProfileSettings:
    from dataclasses import replace

    return replace(ps, queue=queue)
