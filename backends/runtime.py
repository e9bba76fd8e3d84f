"""The runtime: policy, job store and the engine adapters, wired from Settings.

One per process (``taskrouter._runtime``); workers, the API and tests build their own.
It is the only door from ``router/`` to the engines (``taskrouter.ports.RuntimePort``),
and the only code outside an adapter that talks to an engine, always through the
``Backend`` interface.

An adapter, and its engine's library, is loaded on first use: a client that sends only
Celery jobs never imports RQ, an RQ worker never imports Celery, and a process built
with ``engines=()`` (the janitor) imports neither. A job due for an engine this process
may not load is left due for that engine's own workers, which send it.

Long (about 460 lines) because it is the one door: every path of a job between a
caller and an engine (plan and submit, budget refusal, sends and redispatches, cancel,
retry, limits, workflows) passes here, each as a short method that hands the work to
the store or an adapter.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from taskrouter import codec
from taskrouter.derive import Derived, ProfileSettings, derive
from taskrouter.errors import (
    BackendUnavailable,
    BudgetExceeded,
    JobNotFound,
    JobStateConflict,
    TaskrouterError,
)
from taskrouter.job import Job
from taskrouter.policy import ENGINES, Budget, PerKey
from taskrouter.policy_file import load_policy
from taskrouter.registry import CallOptions, Task, limit_key_of
from taskrouter.settings import DISPATCH_GRACE, UNFINISHED_TTL, Settings
from taskrouter.states import CANCELED, FAILED

from .adaptive import Routes
from .base import Call
from .store import JobStore
from .workflow_store import WorkflowStore

if TYPE_CHECKING:
    from taskrouter.workflow import Node
    from taskrouter.workflow_handle import Workflow

    from .base import Backend, CanvasBackend
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
    call: Call


class Runtime:
    """What a process needs to enqueue, read and control jobs."""

    def __init__(
        self, settings: Settings, derived: Derived, *, engines: Sequence[str] = ENGINES
    ) -> None:
        configure_rq_prefix(settings)
        self.settings = settings
        self.derived = derived
        self.engines = tuple(engines)  # the engines this process may load
        self.store = JobStore.from_url(settings.redis_url, settings.key_prefix)
        self.workflows = WorkflowStore(self.store)
        self.routes = Routes(self.store, derived)
        self._backends: dict[str, Backend] = {}

    @classmethod
    def from_env(
        cls, settings: Settings | None = None, *, engines: Sequence[str] = ENGINES
    ) -> Runtime:
        settings = settings or Settings.from_env()
        return cls(settings, derive(load_policy(settings.policy_path)), engines=engines)

    # -- the engines ------------------------------------------------------------------

    def backend(self, name: str) -> Backend:
        """The adapter of engine ``name``, loaded on first use."""
        found = self._backends.get(name)
        if found is None:
            if name not in self.engines:
                raise TaskrouterError(f"this process does not load the {name} engine")
            found = self._backends[name] = self._load(name)
        return found

    def install_backend(self, name: str, backend: Backend) -> None:
        """Use ``backend`` for engine ``name`` (an embedding application's own adapter, or
        a test's fake)."""
        self._backends[name] = backend

    def _load(self, name: str) -> Backend:
        if name == "celery":
            from .celery_backend import CeleryBackend

            return CeleryBackend.from_runtime(self)
        if name == "rq":
            from .rq_backend import RQBackend

            return RQBackend(self.settings.redis_url, self.store, self.derived)
        raise TaskrouterError(f"unknown engine {name!r}: one of {', '.join(ENGINES)}")

    def canvas_backend(self) -> CanvasBackend:
        """The engine of native workflow canvases (Celery)."""
        return self.backend("celery")  # type: ignore[return-value]

    @property
    def loaded(self) -> Mapping[str, Backend]:
        """The adapters this process has loaded so far."""
        return dict(self._backends)

    @property
    def celery(self) -> CeleryBackend:
        return self.backend("celery")  # type: ignore[return-value]

    @property
    def rq(self) -> RQBackend:
        return self.backend("rq")  # type: ignore[return-value]

    @property
    def celery_app(self) -> Any:
        return self.celery.app

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
        retry_of: str | None = None,
    ) -> Job:
        return self.submit(self.plan(task, args, kwargs, options, retry_of=retry_of))

    def plan(
        self,
        task: Task[Any, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: CallOptions,
        *,
        retry_of: str | None = None,
    ) -> Planned:
        """A job's record, ready to write: no I/O but, for a profile routed by observed
        run times, a read of its route at most every ROUTE_CACHE_TTL. Refuses bad
        arguments."""
        ps = self.routes.settings(self.profile_settings(task))
        payload = codec.encode_call(args, kwargs)  # refuses bad arguments before any write
        created = self.store.clock()
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
            "retry_of": retry_of,
            "due_at": created + int((options.delay or 0) * 1000) if delayed else None,
            "limit_key": options.limit_key or limit_key_of(task, args, kwargs, ps.per_key.key),
            "cost": options.cost,
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
        return Planned(ps, job_id, fields, create, idem, delayed, Call.of(task.name, args, kwargs))

    @staticmethod
    def refuses_over_budget(planned: Planned) -> bool:
        """Whether the job's profile refuses enqueues once its budget is spent."""
        budget = planned.ps.budget
        return budget is not None and budget.when_reached == "refuse"

    def check_budget(self, planned: Planned) -> None:
        """BudgetExceeded when the job's profile refuses new jobs once its budget (or its
        limit key's) is spent for the current window."""
        budget = planned.ps.budget
        if budget is None or not self.refuses_over_budget(planned):
            return
        lkey = planned.fields.get("limit_key")
        per_ms = int(budget.per * 1000)
        retry_in = (per_ms - self.store.clock() % per_ms) / 1000
        wanted: list[tuple[str, Budget, str | None]] = [(planned.ps.profile, budget, None)]
        if budget.per_key is not None and lkey:
            wanted.append((planned.ps.profile, budget, lkey))
        spent = self.store.spent_many(wanted)  # the profile's and the key's in one MGET
        if spent[0] >= budget.limit:
            raise BudgetExceeded(planned.ps.profile, spent[0], budget.limit, retry_in)
        if budget.per_key is not None and lkey and spent[1] >= budget.per_key:
            raise BudgetExceeded(planned.ps.profile, spent[1], budget.per_key, retry_in, lkey)

    def submit(self, planned: Planned, *, maybe_written: bool = False) -> Job:
        """Write a planned job's record and send it to its engine.

        ``maybe_written``: an earlier try (the API's, on its own connection) may have
        written the record and sent the message before its connection broke. The record
        is then written only if missing, and the message is sent again: a second copy
        of a dispatch runs nothing (it is refused at claim).
        """
        ps, job_id, create, call = planned.ps, planned.job_id, planned.create, planned.call
        self.check_budget(planned)
        backend = self.backend(ps.backend)
        if planned.idem or planned.delayed:
            holder = self.store.create(create)
            if holder != job_id:
                return self.get_job(holder)
            if not planned.delayed:
                try:
                    backend.send(job_id, 1, ps, call=call)
                except BackendUnavailable:
                    self.store.delete(job_id, planned.idem)
                    raise
        elif maybe_written and self.store.exists(job_id):
            backend.send(job_id, 1, ps, call=call)
        else:
            backend.send(job_id, 1, ps, call=call, create=create)
        return self.job_of(planned)

    def job_of(self, planned: Planned) -> Job:
        """The Job of a planned job as its record says once written."""
        return Job.from_record(
            {k: str(v) for k, v in planned.fields.items() if v is not None}, self
        )

    def fast_message(self, planned: Planned) -> tuple[str, str] | None:
        """The queue key and message of a planned job, where one round trip on any client
        of the job store's Redis can write its record and send it: no idempotency key,
        no delay, an engine that can build the message without its library (Backend.
        fast_message). None for every other job."""
        if planned.idem or planned.delayed:
            return None
        return self.backend(planned.ps.backend).fast_message(
            planned.job_id, 1, planned.ps, planned.call
        )

    def send(self, job_id: str, dispatch: int, ps: ProfileSettings, **options: Any) -> None:
        """Send a dispatch of a job to its engine (``Backend.send``)."""
        self.backend(ps.backend).send(job_id, dispatch, ps, **options)

    def send_released(
        self, job_id: str, backend: str, queue: str, dispatch: str, profile: str
    ) -> bool:
        """Send a job that take_due or a workflow released; False when it is left due for
        its engine's own workers (this process cannot send it)."""
        ps = self.derived.profiles.get(profile)
        if ps is None or backend not in ENGINES:
            # Left in the dispatching set: a process with the right policy sends it.
            log.error("job %s: profile %r / backend %r unknown here", job_id, profile, backend)
            return False
        if backend not in self.engines:
            self.store.due_now(job_id, backend)
            return False
        if ps.queue != queue or ps.backend != backend:
            # Where the record says: its engine and queue when it was sent first (a
            # profile routed by observed run times may have moved since).
            ps = replace(ps, queue=queue, backend=backend)  # type: ignore[arg-type]
        try:
            self.send(job_id, int(dispatch), ps, redispatch=True)
        except BackendUnavailable as exc:
            log.warning("job %s left due for a later send: %s", job_id, exc)
            return False
        return True

    # -- reads and control ------------------------------------------------------------

    def read_record(self, job_id: str) -> dict[str, str] | None:
        return self.store.read(job_id)

    def get_job(self, job_id: str) -> Job:
        record = self.store.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return Job.from_record(record, self, job_id)

    def cancel_job(self, job_id: str) -> dict[str, str]:
        status, previous, backend, dispatch = self.store.cancel(job_id)
        if status == "missing":
            raise JobNotFound(job_id)
        if status == "finished":
            raise JobStateConflict(f"job {job_id} already finished ({previous}); nothing to cancel")
        if previous in ("queued", "running") and backend in self.engines:
            try:
                self.backend(backend).stop(job_id, dispatch, running=previous == "running")
            except BackendUnavailable as exc:
                log.warning("job %s canceled in its record; engine stop failed: %s", job_id, exc)
        record = self.store.read(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def pump(self, limit: int = 200, grace_ms: int = int(DISPATCH_GRACE * 1000)) -> int:
        """Send the due jobs (retries, delayed jobs, released workflow members) of every
        engine this process may load; returns how many were sent."""
        sent = 0
        for engine in self.engines:
            for due in self.store.take_due(limit, grace_ms, engine):
                sent += self.send_released(*due)
        return sent

    def requeue_held(self, before: float) -> list[str]:
        """Give each queued Celery job whose message a worker holds reserved (delivered at
        or before ``before``, epoch seconds) a new dispatch, which Celery's workers send:
        run when a Celery worker died, whose reserved messages kombu would restore only
        after the visibility window. Returns the job ids."""
        from .celery_unacked import held_dispatches

        return self.store.requeue_held(held_dispatches(self, before))

    def publish_limits(self) -> None:
        """Make this policy's limits (global and per key) the ones every worker enforces."""
        self.store.publish_limits(
            {
                name: (
                    ps.concurrency,
                    ps.rate_limit.count if ps.rate_limit else None,
                    ps.rate_limit.per if ps.rate_limit else None,
                )
                for name, ps in self.derived.profiles.items()
            },
            {
                name: (
                    ps.per_key.concurrency,
                    ps.per_key.rate_limit.count if ps.per_key.rate_limit else None,
                    ps.per_key.rate_limit.per if ps.per_key.rate_limit else None,
                )
                for name, ps in self.derived.profiles.items()
                if ps.per_key != PerKey()
            },
            {name: ps.budget for name, ps in self.derived.profiles.items() if ps.budget},
            {n for n, ps in self.derived.profiles.items() if ps.retry_after.pause == "key"},
            {n: dict(ps.per_key.weights) for n, ps in self.derived.profiles.items()},
        )

    def ping(self) -> None:
        self.store.ping()

    def close(self) -> None:
        self.store.close()
        for backend in self._backends.values():
            backend.close()

    # -- workflows (taskrouter.ports.RuntimePort) --------------------------------------

    def enqueue_workflow(self, node: Node) -> Workflow:
        from . import workflows

        return workflows.enqueue(self, node)

    def get_workflow(self, workflow_id: str) -> Workflow:
        from . import workflows

        return workflows.get(self, workflow_id)

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
        options = CallOptions(idempotency_key=f"retry-of:{job_id}")
        return self.enqueue(same, args, kwargs, options, retry_of=job_id)


@functools.lru_cache(maxsize=256)
def _delays_json(backoff: tuple[float, ...]) -> str | None:
    """A profile's retry delays as the record stores them, encoded once per profile
    rather than on every enqueue."""
    return json.dumps(backoff) if backoff else None
