"""A Celery worker of one lane, in this process: the same process tree as ``celery
worker`` (the main process and its prefork children, or one process with threads for the
I/O lane), with the router's duties on the worker's own timer.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from celery import bootsteps, signals

from taskrouter.derive import io_concurrency, prefetch_multiplier
from taskrouter.registry import registered
from taskrouter.settings import SCHEDULE_POLL

from . import runner
from .base import parse_native_id
from .celery_app import is_redis_url, register_tasks
from .duties import Duties
from .hooks import WorkerContext
from .io_lane import IOLane, LanePool
from .reconcile import on_revoked
from .runtime import Runtime

log = logging.getLogger("taskrouter.celery")


class _DutiesStep(bootsteps.StartStopStep):
    """Runs the router's duties on the worker's timer, in its main thread (the hub's
    loop for prefork): no thread in a process that forks."""

    requires = {"celery.worker.components:Timer", "celery.worker.components:Pool"}
    duties: Duties | None = None  # set per worker, before it starts

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        duties = self.duties
        if duties is None:
            return
        duties.processes = lambda: _pool_processes(worker)
        duties.tick()
        self.tref = worker.timer.call_repeatedly(SCHEDULE_POLL, duties.tick, priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
        if self.duties is not None:
            self.duties.leave()


def _pool_processes(worker: Any) -> Sequence[Mapping[str, Any]]:
    try:
        pids = worker.pool.info.get("processes") or [os.getpid()]
    except Exception:  # the pool is starting or stopping
        pids = [os.getpid()]
    return [{"pid": int(pid)} for pid in pids]


def node_name(lane: str) -> str:
    """The Celery node name: unique per process, with the real host name (Celery expands
    ``%h`` only on its own command line). The heartbeat says it too (WorkerInfo.node)."""
    return f"taskrouter-{lane}-{os.getpid()}@{socket.gethostname()}"


def run(
    runtime: Runtime,
    ctx: WorkerContext,
    duties: Duties,
    *,
    lane: str,
    queues: Sequence[str],
    concurrency: int | None,
    events: bool = True,
) -> int:
    """Run the worker until it is told to stop; returns its exit code."""
    app = runtime.celery.app
    io = lane == "io"
    size = concurrency or (io_concurrency(runtime.derived, queues) if io else 2)
    options: dict[str, Any] = {}
    if io:
        # Two log lines per job at thousands of jobs a minute cost the lane's one core
        # more than the jobs do: Celery's per-task lines only for warnings and errors.
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        lane_state = IOLane(ctx, size)
        pool = type("TaskrouterLanePool", (LanePool,), {"lane": lane_state})
        register_tasks(
            app,
            registered().values(),
            acks_late=False,
            deliver=lambda task, job_id, dispatch: lane_state.deliver(
                job_id, dispatch, *_limits(task)
            ),
        )
        options["pool_cls"] = pool
        multiplier = 1
    else:
        register_tasks(app, registered().values(), acks_late=True)
        options["pool_cls"] = "prefork"
        multiplier = prefetch_multiplier(runtime.derived, queues)
    if (io or multiplier == 1) and is_redis_url(runtime.settings.broker_url):
        # Long tasks (and every I/O lane job): reserve nothing beyond what can start, so
        # no message waits behind a long task in this worker while another is idle.
        app.conf.worker_disable_prefetch = True
    signals.task_unknown.connect(_unknown_task(ctx), weak=False)
    signals.task_revoked.connect(on_revoked(runtime), weak=False)  # Flower's revoke
    step = type("TaskrouterDuties", (_DutiesStep,), {"duties": duties})
    app.steps["worker"].add(step)
    worker = app.Worker(
        queues=list(queues),
        concurrency=size,
        loglevel="INFO",
        hostname=node_name(lane),
        prefetch_multiplier=multiplier,
        without_gossip=True,
        without_mingle=True,
        task_events=events,
        **options,
    )
    worker.start()
    return int(worker.exitcode or 0)


def _unknown_task(ctx: WorkerContext) -> Any:
    """A message whose task this worker does not register (Celery refuses it): its job,
    if the message is a dispatch of one, ends failed with TaskNotRegistered, as on RQ,
    instead of staying queued. The record says what to run, and it is not registered
    here, so nothing runs."""

    def on_unknown(sender: Any = None, name: str = "", id: str = "", **_: Any) -> None:
        job_id, dispatch = parse_native_id(id or "")
        if job_id.isalnum():
            runner.run(job_id, dispatch, ctx=ctx)

    return on_unknown


def _limits(task: Any) -> tuple[float | None, float | None]:
    """(soft, hard) time limits of the message being run."""
    hard, soft = task.request.timelimit or (None, None)
    return soft, hard
