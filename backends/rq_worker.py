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

from redis.exceptions import OutOfMemoryError
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
    serializer (RQ's pool hands its workers Queue objects built with pickle's).

    It keeps going while Redis is full (maxmemory, noeviction): RQ's own worker quits on
    the first write Redis refuses (its state, heartbeat, maintenance, a dequeue). Here
    those wait or are skipped until Redis takes writes again; taskrouter's job record,
    not RQ's bookkeeping, says what became of a job meanwhile."""

    def __init__(self, queues: Any, *args: Any, **kwargs: Any) -> None:
        names = [q.name if isinstance(q, Queue) else q for q in queues]
        super().__init__(names, *args, **kwargs)
        # Job records name the RQ worker process (and its work-horse), as `rq info` does.
        context().name = worker_name("rq")
        self._full_since: float | None = None
        stop_with_parent()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        return bool(super().work(*args, **kwargs))

    def _full(self, what: str, exc: OutOfMemoryError) -> None:
        if self._full_since is None:
            self._full_since = time.monotonic()
            log.warning("rq worker %s: Redis is out of memory (%s): %s", self.name, what, exc)

    def _not_full(self) -> None:
        if self._full_since is not None:
            took = time.monotonic() - self._full_since
            log.warning("rq worker %s: Redis takes writes again after %.1f s", self.name, took)
            self._full_since = None

    def set_state(self, state: str, pipeline: Any = None) -> None:
        try:
            super().set_state(state, pipeline=pipeline)
        except OutOfMemoryError as exc:  # only what rq info shows
            self._full("its state not stored", exc)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        try:
            super().heartbeat(timeout, pipeline=pipeline)
        except OutOfMemoryError as exc:
            self._full("heartbeat not stored", exc)

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except OutOfMemoryError as exc:  # its check writes the heartbeat in a pipeline
            self._full("suspension not checked", exc)
            time.sleep(0.5)

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except OutOfMemoryError as exc:
            self._full("maintenance skipped", exc)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> Any:
        wait = 0.5
        while True:
            try:
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except OutOfMemoryError as exc:
                self._full("waiting to take a job", exc)
                if self._stop_requested:
                    return None
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            self._not_full()
            return result

    def execute_job(self, job: Any, queue: Any) -> None:
        try:
            super().execute_job(job, queue)
        except OutOfMemoryError as exc:
            # RQ could not record this execution; a job that did not run is sent again
            # by the janitor (reconcile.py: an RQ job in no queue, begun by no worker).
            self._full(f"job {job.id} not recorded by RQ", exc)


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
