"""RQ behind the Backend interface: a JSON-only serializer, a Job class that runs only
taskrouter's registered tasks, sending in one MULTI with the job record, and stopping.

An RQ job carries the task's own name as its function name and a description with its
real arguments (what rq-dashboard and ``rq info`` show), the ``(job_id, dispatch)`` of
the job as its arguments, and as its result what the task returned (a preview when long).

RQ reads RQ_KEY_PREFIX when it is imported, so ``Runtime`` sets it before it loads this
module (``runtime.configure_rq_prefix``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from taskrouter import codec
from taskrouter.derive import Derived, ProfileSettings, engine_queues
from taskrouter.errors import RefusedJob

from . import runner
from .base import Call, native_id
from .connection import PerProcess
from .errors import engine_errors
from .hooks import context
from .store import JobStore

log = logging.getLogger("taskrouter.rq")


class CodecSerializer:
    """RQ serializer over taskrouter's codec: JSON only; a pickle payload fails to load.

    Give it to RQ's own tools too: ``rq info --serializer
    taskrouter.backends.rq_backend.CodecSerializer``, ``rq-dashboard -j`` reads it as JSON.
    """

    @staticmethod
    def dumps(obj: Any, /) -> bytes:
        return codec.dumps(obj).encode()

    @staticmethod
    def loads(data: bytes, /) -> Any:
        return codec.loads(data)


class SafeJob(Job):
    """An RQ Job that never imports what a message names.

    RQ imports ``func_name`` (and callback names) from the job hash; anyone able to write
    to Redis could name any function. Here the name is never imported: every job runs
    taskrouter's entry point, which runs the task its job record names (only if it is
    registered in this worker: else the job fails with TaskNotRegistered), and only when
    the job's arguments are a taskrouter dispatch (a job id and a dispatch number) whose
    record exists. No callbacks run.
    """

    @property
    def func(self) -> Any:
        args = self.args
        dispatch = (
            self.instance is None
            and not self.kwargs
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].isalnum()
            and type(args[1]) is int
        )
        if dispatch:
            return rq_entry
        raise RefusedJob(
            f"refusing RQ job {self.id}: it names {self.func_name!r} with arguments that are "
            "not a taskrouter dispatch (enqueue through taskrouter)"
        )

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


def rq_entry(job_id: str, dispatch: int) -> Any:
    """What every taskrouter RQ job calls (in the work-horse): the job through the claim;
    its return value as RQ's result, or its exception raised again once recorded."""
    ran = runner.run(job_id, dispatch, ctx=context())
    done = ran.attempt
    if done is None:
        return f"not run: {ran.state}"
    if done.outcome != "succeeded" and done.error is not None:
        raise done.error
    return runner.shown(done)


class RQBackend:
    name = "rq"

    def __init__(self, url: str, store: JobStore, derived: Derived) -> None:
        # RQ needs bytes replies, unlike the store's client.
        self._clients = PerProcess(url)
        self.store = store
        self._queues: dict[str, Queue] = {}
        self.queue_names = engine_queues(derived, "rq")
        self._script_loaded = False  # the create script is in the server's script cache

    @property
    def connection(self) -> redis.Redis:
        if self._clients.fresh:
            self._queues.clear()
        return self._clients.get()

    def queue(self, name: str) -> Queue:
        connection = self.connection
        q = self._queues.get(name)
        if q is None:
            q = Queue(name, connection=connection, serializer=CodecSerializer, job_class=SafeJob)
            self._queues[name] = q
        return q

    def send(
        self,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        *,
        call: Call | None = None,
        create: Sequence[object] | None = None,
        redispatch: bool = False,
    ) -> None:
        call = call or self._call_of(job_id)
        q = self.queue(settings.queue)
        # The record write goes as EVALSHA once the script is loaded (JobStore.queue_create:
        # 40 bytes instead of 3 KB in every enqueue's MULTI).
        cached = create is not None
        if cached and not self._script_loaded:
            self.store.load_create()
            self._script_loaded = True
        job = _RQCall(job_id, dispatch, settings, call, create, redispatch)
        with engine_errors("redis (rq)"):
            try:
                self._send(q, job, cached)
            except NoScriptError:
                # Redis lost its script cache since (a restart, SCRIPT FLUSH), and EXEC ran
                # RQ's commands without the record. Send again with the script's text: the
                # job runs once, as its first copy finds no record, or one already claimed.
                self._script_loaded = False
                log.warning("job %s: Redis lost its script cache; sending again", job_id)
                self._send(q, job, False)

    def _call_of(self, job_id: str) -> Call:
        task, payload = self.store.fields(job_id, "task", "payload")
        return Call.of_payload(task or "", payload or "")

    def _send(self, q: Queue, job: _RQCall, cached: bool) -> None:
        pipe = self.connection.pipeline()
        pipe.multi()  # the record write and RQ's enqueue commit together
        if job.create is not None:
            self.store.queue_create(pipe, job.create, cached=cached)
        if job.redispatch:
            self.store.dispatched(job.job_id, self.name, pipe)
        # Which dispatch reached RQ, committed with RQ's job: the janitor then tells an RQ
        # job deleted outside taskrouter (canceled) from one never sent (sent again).
        pipe.hset(self.store.keys.job(job.job_id), "sent", job.dispatch)
        q.enqueue_call(
            job.call.task,
            args=(job.job_id, job.dispatch),
            job_id=native_id(job.job_id, job.dispatch),
            description=f"{job.call.task}{job.call.args}",
            timeout=job.settings.job_timeout,
            result_ttl=job.settings.keep_results,
            failure_ttl=job.settings.keep_results,
            pipeline=pipe,
        )
        pipe.execute()

    def fast_message(
        self, job_id: str, dispatch: int, settings: ProfileSettings, call: Call
    ) -> tuple[str, str] | None:
        return None  # RQ builds a job hash as well as the queue entry: RQ's enqueue only

    def stop(self, job_id: str, dispatch: int, *, running: bool) -> None:
        nid = native_id(job_id, dispatch)
        with engine_errors("redis (rq)"):
            try:
                if running:
                    send_stop_job_command(self.connection, nid, serializer=CodecSerializer)
                else:
                    job = SafeJob.fetch(nid, connection=self.connection, serializer=CodecSerializer)
                    job.cancel()
                    # RQ keeps a canceled job's hash for good: it lives as long as a
                    # finished one (result_ttl is the profile's keep_results).
                    if job.result_ttl is not None and job.result_ttl > 0:
                        self.connection.expire(job.key, job.result_ttl)
            except (NoSuchJobError, InvalidJobOperation) as exc:
                # Already gone or between states: the canceled record refuses it anyway.
                log.info("rq stop of %s: %s", nid, exc)

    def ping(self) -> None:
        with engine_errors("redis (rq)"):
            self.connection.ping()

    def queue_depths(self) -> dict[str, int]:
        with engine_errors("redis (rq)"):
            pipe = self.connection.pipeline(transaction=False)
            for name in self.queue_names:
                pipe.llen(self.queue(name).key)
            return dict(zip(self.queue_names, pipe.execute(), strict=True))

    def close(self) -> None:
        self._clients.close()


@dataclass(frozen=True, slots=True)
class _RQCall:
    """One send's arguments, kept for the resend after a lost script cache."""

    job_id: str
    dispatch: int
    settings: ProfileSettings
    call: Call
    create: Sequence[object] | None
    redispatch: bool
