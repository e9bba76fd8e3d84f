"""The janitor: the router's own background duties, in a process of its own.

- sends due retries and delayed jobs to their engines (the router's schedule: long waits
  never sit in a broker, where a countdown past the visibility window runs twice);
- fails or retries jobs whose lease lapsed (their worker died), on both engines;
- beats the heartbeat of the worker that started it, while that worker lives, so that
  /readyz can count live workers.

Every step is an atomic script, so any number of janitors can run at once: each worker
starts one, and ``taskrouter janitor`` runs one on its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from types import FrameType

from taskrouter.backends import workflows
from taskrouter.backends.runtime import Runtime
from taskrouter.backends.store import WorkerRegistry
from taskrouter.errors import TaskrouterError
from taskrouter.settings import SCHEDULE_POLL

log = logging.getLogger("taskrouter.janitor")


class Janitor:
    def __init__(
        self,
        runtime: Runtime,
        *,
        engine: str | None = None,
        name: str = "",
        parent: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.engine = engine
        self.name = name
        self.parent = parent
        self.workers = WorkerRegistry(runtime.store)
        self._stopping = False
        self._next_reap = 0.0
        # Leases cannot be renewed while Redis is unreachable; reap only after Redis has
        # been reachable for a whole lease, so that a running job's keeper renews first.
        self._up_since = time.monotonic()

    def reap(self) -> int:
        reaped = self.runtime.store.reap()
        for job_id, outcome in reaped:
            log.warning("job %s: its worker died; now %s", job_id, outcome)
        # Past the broker's window a queued Celery message is lost or held by a dead
        # worker (kombu restores those only then): send the job again.
        for job_id in self.runtime.store.requeue_stale(self.runtime.derived.visibility_timeout):
            log.warning("job %s: queued past the visibility window; dispatched again", job_id)
        return len(reaped)

    def housekeeping(self) -> dict[str, int]:
        """The duties that run every janitor interval: reap dead workers' jobs, drop
        expired index entries, catch up workflow members nobody counted."""
        return {
            "reaped": self.reap(),
            "swept": self.runtime.store.sweep(),
            "workflows": workflows.sweep(self.runtime),
        }

    def run_once(self) -> dict[str, int]:
        """One pass of every duty; returns what it did."""
        return {**self.housekeeping(), "sent": self.runtime.pump()}

    def _parent_gone(self) -> bool:
        return self.parent is not None and os.getppid() != self.parent

    def _tick(self) -> None:
        if self.engine:
            self.workers.beat(self.engine, self.name)
        settled = time.monotonic() - self._up_since >= self.runtime.settings.lease_ttl
        if settled and time.monotonic() >= self._next_reap:
            self.housekeeping()
            self._next_reap = time.monotonic() + self.runtime.settings.janitor_interval
        self.runtime.pump()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run_forever(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            while not self._stopping and not self._parent_gone():
                try:
                    self._tick()
                except TaskrouterError as exc:
                    log.warning("janitor pass failed (will retry): %s", exc)
                    self._up_since = time.monotonic()
                time.sleep(SCHEDULE_POLL)
        finally:
            if self.engine:
                with contextlib.suppress(TaskrouterError):
                    self.workers.leave(self.engine, self.name)
