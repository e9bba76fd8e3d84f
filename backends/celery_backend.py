"""Celery: the app taskrouter builds from the policy, sending, stopping, and the worker."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from kombu.exceptions import OperationalError

from router.derive import Derived, ProfileSettings
from router.errors import BackendUnavailable
from router.settings import Settings

from . import execute
from .base import native_id
from .store import JobStore, WorkerRegistry

log = logging.getLogger("taskrouter.celery")

EXECUTE = "taskrouter.execute"


def is_redis_url(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis", "rediss", "unix", "valkey", "valkeys")


def celery_url(url: str) -> str:
    """kombu and Celery's result backend spell a unix socket ``redis+socket:///path``."""
    if not url.startswith("unix://"):
        return url
    parts = urlsplit(url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


def make_app(settings: Settings, derived: Derived) -> Celery:
    """A Celery app whose every setting that matters comes from the policy.

    No pickle: only JSON is produced or accepted. Messages carry only (job_id, dispatch);
    the arguments stay in the job record.
    """
    app = Celery(
        "taskrouter",
        broker=celery_url(settings.broker_url),
        backend=celery_url(settings.redis_url),
        set_as_current=False,
    )
    transport: dict[str, Any] = {"visibility_timeout": derived.visibility_timeout}
    result_transport: dict[str, Any] = {}
    if settings.celery_key_prefix:
        transport["global_keyprefix"] = settings.celery_key_prefix
        result_transport["global_keyprefix"] = settings.celery_key_prefix
    keep = max((p.keep_results for p in derived.profiles.values()), default=86400)
    app.conf.update(
        accept_content=["json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        # Each delivery is claimed in the job record, so a redelivered message is harmless
        # and a message lost with a dead worker comes back: ack after the run.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=result_transport,
        result_expires=keep,
        task_ignore_result=True,
        task_track_started=False,
        task_default_queue="taskrouter-default",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )

    @app.task(name=EXECUTE, ignore_result=True)
    def run_job(job_id: str, dispatch: int) -> str:
        return execute.run(job_id, dispatch)

    return app


@contextmanager
def broker_errors() -> Iterator[None]:
    try:
        yield
    except (OperationalError, ConnectionError, OSError) as exc:
        raise BackendUnavailable("celery broker", str(exc) or type(exc).__name__) from exc


class CeleryBackend:
    name = "celery"

    def __init__(self, app: Celery, store: JobStore, queues: Sequence[str] = ()) -> None:
        self.app = app
        self.store = store
        self.queue_names = list(queues)

    def send(
        self,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        *,
        create: Sequence[object] | None = None,
        redispatch: bool = False,
    ) -> None:
        if create is not None:
            self.store.create(create)
        try:
            with broker_errors():
                self.app.send_task(
                    EXECUTE,
                    args=(job_id, dispatch),
                    task_id=native_id(job_id, dispatch),
                    queue=settings.queue,
                    soft_time_limit=settings.soft_time_limit,
                    time_limit=settings.time_limit,
                )
        except BackendUnavailable:
            if create is not None:
                self.store.delete(job_id, str(create[3]))
            raise
        if redispatch:
            self.store.dispatched(job_id)

    def stop(self, job_id: str, dispatch: int, *, running: bool) -> None:
        # The record already says canceled, so any delivery is refused at claim time;
        # revoke only stops a running task sooner. A revoke is lost when no worker is
        # online, which is why the record, not the revoke, is what guarantees it.
        with broker_errors():
            self.app.control.revoke(
                native_id(job_id, dispatch), terminate=running, signal="SIGTERM"
            )

    def ping(self) -> None:
        with broker_errors(), self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def queue_depths(self) -> dict[str, int]:
        depths: dict[str, int] = {}
        with broker_errors(), self.app.connection_for_write() as conn, conn.channel() as chan:
            for queue in self.queue_names:
                try:
                    depths[queue] = chan.queue_declare(queue, passive=True).message_count
                except Exception:  # a queue nobody declared yet holds nothing
                    depths[queue] = 0
        return depths

    def workers_alive(self) -> int:
        return len(WorkerRegistry(self.store).alive("celery"))

    def close(self) -> None:
        self.app.close()
