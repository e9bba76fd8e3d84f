"""RQ workers of one ``taskrouter worker``: RQ's own worker pool (``rq worker-pool``),
whose main process also runs the router's duties and restarts its workers with a growing
delay, giving up after a bounded number of quick failures.

Each RQ worker forks a work-horse per job (memory isolation for long calls), with
taskrouter's JSON serializer and a Job class that runs only registered tasks. An RQ worker
stops when its pool's main process dies, however it dies (a warm shutdown: the job its
horse runs ends first), as Celery's pool children exit with their main process: a pool
killed and started again must not leave its RQ workers running beside the new ones,
unsupervised and counted by no heartbeat.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rq import Queue, Worker
from rq.worker_pool import WorkerData, WorkerPool

from taskrouter.settings import QUICK_FAILURE, QUICK_FAILURES, RESTART_BACKOFF

from .duties import Duties
from .heartbeats import worker_name
from .hooks import context
from .rq_backend import CodecSerializer, SafeJob

log = logging.getLogger("taskrouter.rq")

_PR_SET_PDEATHSIG = 1


def stop_with_parent() -> None:
    """In an RQ worker forked by a pool: SIGTERM (RQ's warm shutdown) when the pool's main
    process dies. Linux only; elsewhere an RQ worker outlives a killed pool."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    # Until RQ's worker installs its own handlers (in work(), before it takes a job), a
    # SIGTERM ends this idle process; the handler inherited from the pool would stop the
    # pool's other workers instead.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask to stop with the pool: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent.pid:  # it died before the request
        signal.raise_signal(signal.SIGTERM)


class TaskrouterWorker(Worker):
    """An RQ worker without RQ's scheduler process: retries, delays and limits are the
    router's (its schedule), sent by the pool's duties. Its queues use taskrouter's
    serializer (RQ's pool hands its workers Queue objects built with pickle's)."""

    def __init__(self, queues: Any, *args: Any, **kwargs: Any) -> None:
        names = [q.name if isinstance(q, Queue) else q for q in queues]
        super().__init__(names, *args, **kwargs)
        # Job records name the RQ worker process (and its work-horse), as `rq info` does.
        context().name = worker_name("rq")
        stop_with_parent()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        return bool(super().work(*args, **kwargs))


class TaskrouterPool(WorkerPool):
    def __init__(self, queues: Sequence[str], connection: Any, size: int, duties: Duties) -> None:
        super().__init__(
            list(queues),
            connection=connection,
            num_workers=size,
            worker_class=TaskrouterWorker,
            serializer=CodecSerializer,
            job_class=SafeJob,
        )
        self.duties = duties
        duties.processes = self.processes
        self.failed: str | None = None  # why the pool gave up, if it did
        self._started: dict[str, float] = {}
        self._quick = 0  # quick failures in a row
        self._respawn_at = 0.0

    def processes(self) -> Sequence[Mapping[str, Any]]:
        return [{"pid": data.pid, "name": name} for name, data in self.worker_dict.items()]

    def start_worker(self, *args: Any, **kwargs: Any) -> None:
        super().start_worker(*args, **kwargs)
        for name in self.worker_dict.keys() - self._started.keys():
            self._started[name] = time.monotonic()

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        lived = time.monotonic() - self._started.pop(worker_data.name, time.monotonic())
        code = worker_data.process.exitcode
        if self.status == self.Status.STOPPED:
            return
        # An exit while Redis restarts (RQ workers quit on some connection errors) is no
        # crash of the app: it waits for Redis and never counts towards giving up.
        quick = lived < QUICK_FAILURE and self._redis_steady(lived)
        self._quick = self._quick + 1 if quick else 0
        delay = RESTART_BACKOFF[min(self._quick, len(RESTART_BACKOFF)) - 1] if self._quick else 0
        log.warning("rq worker %s exited with %s after %.1f s", worker_data.pid, code, lived)
        if self._quick >= QUICK_FAILURES:
            self.failed = (
                f"rq workers exited {self._quick} times in a row within {QUICK_FAILURE:g} s of "
                f"starting (last exit code {code}); see their error above"
            )
            log.error("%s: stopping", self.failed)
            self.request_stop()
            return
        self._respawn_at = time.monotonic() + delay

    def _redis_steady(self, lived: float) -> bool:
        """Redis answers now and has not failed the duties since the worker started."""
        if time.monotonic() - self.duties.up_since < lived:
            return False
        try:
            return bool(self.connection.ping())
        except Exception:
            return False

    def check_workers(self, respawn: bool = True) -> None:
        waiting = time.monotonic() < self._respawn_at
        super().check_workers(respawn=respawn and not waiting)
        self.duties.tick()
