"""The Celery app taskrouter builds from the policy, and the tasks a worker registers.

No pickle: only JSON is produced or accepted. Messages carry only ``(job_id,
dispatch)``; the arguments stay in the job record. Each ``@task`` is registered in a
worker's app under its own name, so Flower, ``celery inspect`` and ``celery events`` show
what ran; every one of them runs the job through taskrouter's claim (``runner.py``), so
a message can never run anything but a registered task of a job that exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from celery import Celery
from celery.exceptions import Ignore

from taskrouter.derive import Derived
from taskrouter.errors import MemberFailed
from taskrouter.registry import Task
from taskrouter.settings import Settings

from . import runner
from .hooks import context

log = logging.getLogger("taskrouter.celery")

EXECUTE = "taskrouter.execute"  # the one task name of taskrouter before tasks had their own
MEMBER = "taskrouter.member"  # likewise, for native canvas members
# Celery's built-in tasks a taskrouter canvas needs on a worker (a chord inside a chain
# travels as a "celery.chord" message); every other built-in is unregistered, so that a
# planted message cannot run them (celery.accumulate, celery.map, celery.backend_cleanup).
CANVAS_BUILTINS = frozenset({"celery.chord", "celery.chord_unlock", "celery.group", "celery.chain"})


def is_redis_url(url: str) -> bool:
    scheme = url.split("://", 1)[0]
    return scheme in ("redis", "rediss", "unix", "valkey", "valkeys", "redis+socket")


def celery_url(url: str) -> str:
    """kombu and Celery's result backend spell a unix socket ``redis+socket:///path``."""
    if not url.startswith("unix://"):
        return url
    parts = urlsplit(url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


def make_app(settings: Settings, derived: Derived) -> Celery:
    """A Celery app whose every setting that matters comes from the policy."""
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
        # Flower and `celery events` see tasks live (`taskrouter worker --no-events`).
        worker_send_task_events=True,
        task_send_sent_event=False,
        enable_utc=True,
    )
    return app


Deliver = Callable[[Any, str, int], Any]  # (the Celery task, job id, dispatch) -> result


def register_tasks(
    app: Celery, tasks: Iterable[Task[Any, Any]], *, acks_late: bool, deliver: Deliver | None = None
) -> None:
    """Register, on a worker's app, each @task under its own name, and the two names of
    older messages; drop the built-in tasks a taskrouter worker has no use for.

    ``deliver`` runs an isolated job's delivery (by default ``runner.run`` in the calling
    process). ``acks_late`` False is the I/O lane's: its message is acknowledged when the
    job starts, and the job is kept safe by its lease.
    """
    for name in [n for n in app.tasks if n.startswith("celery.") and n not in CANVAS_BUILTINS]:
        del app.tasks[name]
    for name in {EXECUTE, MEMBER, *(t.name for t in tasks)}:
        _register(app, name, acks_late=acks_late, deliver=deliver or _run_here)


def _run_here(task: Any, job_id: str, dispatch: int) -> Any:
    return shown_result(runner.run(job_id, dispatch, ctx=context()))


def _register(app: Celery, name: str, *, acks_late: bool, deliver: Deliver) -> None:
    # shared=False: this app's task only; a shared task would be added to every Celery app
    # built later in the process (tests and the API build several).
    @app.task(
        name=name,
        bind=True,
        shared=False,
        ignore_result=False,  # isolated jobs' messages say ignore_result; a chord's do not
        max_retries=None,  # the job record counts attempts, not Celery
        acks_late=acks_late,
    )
    def run_job(self: Any, job_id: str, dispatch: int = 1, canvas: bool = False) -> Any:
        if canvas or name == MEMBER:
            from .celery_canvas import run_member

            return run_member(self, job_id, dispatch)
        return deliver(self, job_id, dispatch)


def shown_result(ran: runner.Ran) -> Any:
    """What Flower and ``celery events`` show for a delivery: the task's return value (a
    preview when long), its exception raised again once the end is recorded, or why it
    did not run."""
    done = ran.attempt
    if done is None:
        return f"not run: {ran.state}"
    if done.outcome == "succeeded":
        return runner.shown(done)
    if done.error is not None and not isinstance(done.error, MemberFailed):
        raise done.error
    raise Ignore()
