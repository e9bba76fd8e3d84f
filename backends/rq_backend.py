"""RQ: a JSON-only serializer, a Job class that runs only taskrouter's entry point,
sending in one MULTI with the job record, stopping, and the worker.

RQ reads RQ_KEY_PREFIX when it is imported, so ``configure_prefix`` must run first
(``backends.runtime`` does it before importing this module).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError
from rq import Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from taskrouter import codec
from taskrouter.derive import ProfileSettings
from taskrouter.errors import TaskrouterError

from . import execute
from .base import native_id
from .connection import PerProcess
from .store import JobStore, WorkerRegistry, redis_errors

log = logging.getLogger("taskrouter.rq")

ENTRY = "backends.rq_backend.rq_entry"


class CodecSerializer:
    """RQ serializer over taskrouter's codec: JSON only; a pickle payload fails to load."""

    @staticmethod
    def dumps(obj: Any, /) -> bytes:
        return codec.dumps(obj).encode()

    @staticmethod
    def loads(data: bytes, /) -> Any:
        return codec.loads(data)


class RefusedJob(TaskrouterError):
    """Raised when an RQ message names anything but taskrouter's entry point."""


class SafeJob(Job):
    """An RQ Job that never imports what a message names.

    RQ imports ``func_name`` (and callback names) from the job hash; anyone able to write
    to Redis could name any function. Here only ``ENTRY`` runs, and no callbacks do.
    """

    @property
    def func(self) -> Any:
        if self.func_name != ENTRY or self.instance is not None:
            raise RefusedJob(
                f"refusing RQ job {self.id}: it names {self.func_name!r}, and this worker runs "
                f"only {ENTRY} (enqueue through taskrouter)"
            )
        return rq_entry

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


def rq_entry(job_id: str, dispatch: int) -> str:
    """What every taskrouter RQ job calls (in the work-horse)."""
    return execute.run(job_id, dispatch)


class RQBackend:
    name = "rq"

    def __init__(self, url: str, store: JobStore, queues: Sequence[str] = ()) -> None:
        # RQ needs bytes replies, unlike the store's client.
        self._clients = PerProcess(url)
        self.store = store
        self._queues: dict[str, Queue] = {}
        self.queue_names = list(queues)
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
        create: Sequence[object] | None = None,
        redispatch: bool = False,
    ) -> None:
        q = self.queue(settings.queue)
        # The record write goes as EVALSHA once the script is loaded (JobStore.queue_create:
        # 40 bytes instead of 3 KB in every enqueue's MULTI).
        cached = create is not None
        if cached and not self._script_loaded:
            self.store.load_create()
            self._script_loaded = True
        with redis_errors("redis (rq)"):
            try:
                self._send(q, job_id, dispatch, settings, create, redispatch, cached)
            except NoScriptError:
                # Redis lost its script cache since (a restart, SCRIPT FLUSH), and EXEC ran
                # RQ's commands without the record. Send again with the script's text: the
                # job runs once, as its first copy finds no record, or one already claimed.
                self._script_loaded = False
                log.warning("job %s: Redis lost its script cache; sending again", job_id)
                self._send(q, job_id, dispatch, settings, create, redispatch, False)

    def _send(
        self,
        q: Queue,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        create: Sequence[object] | None,
        redispatch: bool,
        cached: bool,
    ) -> None:
        pipe = self.connection.pipeline()
        pipe.multi()  # the record write and RQ's enqueue commit together
        if create is not None:
            self.store.queue_create(pipe, create, cached=cached)
        if redispatch:
            pipe.zrem(self.store.keys.dispatching(self.name), job_id)
        q.enqueue_call(
            ENTRY,
            args=(job_id, dispatch),
            job_id=native_id(job_id, dispatch),
            timeout=settings.job_timeout,
            result_ttl=settings.keep_results,
            failure_ttl=settings.keep_results,
            pipeline=pipe,
        )
        pipe.execute()

    def stop(self, job_id: str, dispatch: int, *, running: bool) -> None:
        nid = native_id(job_id, dispatch)
        with redis_errors("redis (rq)"):
            try:
                if running:
                    send_stop_job_command(self.connection, nid, serializer=CodecSerializer)
                else:
                    SafeJob.fetch(
                        nid, connection=self.connection, serializer=CodecSerializer
                    ).cancel()
            except (NoSuchJobError, InvalidJobOperation) as exc:
                # Already gone or between states: the canceled record refuses it anyway.
                log.info("rq stop of %s: %s", nid, exc)

    def ping(self) -> None:
        with redis_errors("redis (rq)"):
            self.connection.ping()

    def queue_depths(self) -> dict[str, int]:
        with redis_errors("redis (rq)"):
            pipe = self.connection.pipeline(transaction=False)
            for name in self.queue_names:
                pipe.llen(self.queue(name).key)
            return dict(zip(self.queue_names, pipe.execute(), strict=True))

    def workers_alive(self) -> int:
        return len(WorkerRegistry(self.store).alive("rq"))

    def close(self) -> None:
        self._clients.close()


def make_worker(connection: redis.Redis, queues: Sequence[str], name: str) -> Worker:
    """A forking RQ worker (one work-horse per job: memory isolation for long calls)."""
    return Worker(
        list(queues),
        connection=connection,
        name=name,
        serializer=CodecSerializer,
        job_class=SafeJob,
    )
