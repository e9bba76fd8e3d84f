"""Celery behind the Backend interface: sending, stopping, health and queue depths.

Messages carry ``(job_id, dispatch)`` under the task's own name, with the task's real
arguments shown in ``argsrepr``/``kwargsrepr`` (what Flower shows); the arguments stay
in the job record. Where the broker is the job store's Redis, the message and the
record go in one round trip (``celery_fastpath.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery

from taskrouter.derive import Derived, ProfileSettings, engine_queues

from . import celery_canvas
from .base import Call, native_id
from .celery_app import celery_url, make_app
from .celery_fastpath import FastPath
from .errors import engine_errors
from .store import JobStore

if TYPE_CHECKING:
    from taskrouter.workflow import Node

    from .runtime import Runtime

log = logging.getLogger("taskrouter.celery")


def send_options(
    job_id: str, dispatch: int, settings: ProfileSettings, call: Call
) -> dict[str, Any]:
    """send_task's options for a dispatch."""
    return {
        "args": (job_id, dispatch),
        "task_id": native_id(job_id, dispatch),
        "queue": settings.queue,
        "soft_time_limit": settings.soft_time_limit,
        "time_limit": settings.time_limit,
        "argsrepr": call.args,
        "kwargsrepr": call.kwargs,
        # Nothing reads Celery's results (the record has them; the task ignores them).
        # Without this, send_task SUBSCRIBEs to the task's result channel and the
        # dropped AsyncResult UNSUBSCRIBEs: two more round trips per enqueue.
        "ignore_result": True,
    }


class CeleryBackend:
    name = "celery"

    def __init__(self, app: Celery, store: JobStore, derived: Derived) -> None:
        self.app = app
        self.store = store
        self.queue_names = engine_queues(derived, "celery")
        self.fast = FastPath(app, store, self.name)

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> CeleryBackend:
        return cls(make_app(runtime.settings, runtime.derived), runtime.store, runtime.derived)

    @property
    def _templates(self) -> dict[Any, Any]:  # what a process has learned (tests read it)
        return self.fast._templates

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
        sent = written = False
        message = self.fast.filled(job_id, dispatch, settings, call)
        if message is not None:
            sent, written = self.fast.send_filled(job_id, message, create, redispatch)
        elif create is not None and self.fast.usable:
            options = send_options(job_id, dispatch, settings, call)
            sent, written = self.fast.send_with_record(job_id, dispatch, call, options, create)
        if sent:
            return
        if create is not None and not written:
            self.store.create(create)
        try:
            with engine_errors("celery broker"):
                self.app.send_task(call.task, **send_options(job_id, dispatch, settings, call))
        except Exception:
            if create is not None:
                self.store.delete(job_id, str(create[3]))
            raise
        if redispatch:
            self.store.dispatched(job_id, self.name)

    def _call_of(self, job_id: str) -> Call:
        task, payload = self.store.fields(job_id, "task", "payload")
        return Call.of_payload(task or "", payload or "")

    def fast_message(
        self, job_id: str, dispatch: int, settings: ProfileSettings, call: Call
    ) -> tuple[str, str] | None:
        return self.fast.filled(job_id, dispatch, settings, call)

    def send_canvas(
        self, node: Node, ids: Sequence[str], settings: Sequence[ProfileSettings]
    ) -> None:
        with engine_errors("celery broker"):
            celery_canvas.send(self.app, node, ids, settings)

    def stop(self, job_id: str, dispatch: int, *, running: bool) -> None:
        # The record already says canceled, so any delivery is refused at claim time;
        # revoke only stops a running task sooner. A revoke is lost when no worker is
        # online, which is why the record, not the revoke, is what guarantees it.
        with engine_errors("celery broker"):
            self.app.control.revoke(
                native_id(job_id, dispatch), terminate=running, signal="SIGTERM"
            )

    def ping(self) -> None:
        with engine_errors("celery broker"), self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def queue_depths(self) -> dict[str, int]:
        if self.app.conf.broker_url == celery_url(self.store.url):
            # kombu keeps a queue as a list under its global key prefix; a passive
            # declare through kombu does not apply that prefix.
            prefix = self.fast.kombu_prefix
            with engine_errors("celery broker"):
                pipe = self.store.client.pipeline(transaction=False)
                for queue in self.queue_names:
                    pipe.llen(prefix + queue)
                return dict(zip(self.queue_names, pipe.execute(), strict=True))
        depths: dict[str, int] = {}
        with (
            engine_errors("celery broker"),
            self.app.connection_for_write() as conn,
            conn.channel() as chan,
        ):
            for queue in self.queue_names:
                try:
                    depths[queue] = chan.queue_declare(queue, passive=True).message_count
                except Exception:  # a queue nobody declared yet holds nothing
                    depths[queue] = 0
        return depths

    def close(self) -> None:
        self.app.close()
