"""The router's background duties, run every tick by each worker's main process (a
Celery worker's timer, the RQ worker pool's loop) and by ``taskrouter janitor``.

- beat the worker's heartbeat, with its processes, so that /readyz and the dashboard
  count live workers;
- make the jobs of the policy's schedules whose tick is due (periodic.py);
- send the due jobs of the engines this process loads (retries, delayed jobs, workflow
  members released by another engine's worker): long waits never sit in a broker, where
  a countdown past the visibility window runs twice;
- every janitor interval: fail or retry jobs whose lease lapsed (their worker died), give
  a new dispatch to Celery jobs whose messages a dead Celery worker held, or that sat
  queued past the visibility window, follow queued jobs whose engine message was
  deleted, canceled or lost outside taskrouter (reconcile.py), drop index entries of
  expired records and the engines' registry entries of expired jobs (trim.py), count
  workflow members nobody counted, and move the profiles that adaptive routing
  (adaptive.py) finds on the wrong lane.

Every duty is an atomic script, so any number of processes can run them at once. A
process runs them in its own loop, never in a thread: Celery's main process and the RQ
pool fork children, and a fork taken while another thread holds a lock deadlocks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from taskrouter.errors import TaskrouterError

from . import adaptive, trim, workflows
from .heartbeats import WorkerInfo, WorkerRegistry
from .periodic import Periodic
from .reconcile import Reconciler
from .runtime import Runtime

log = logging.getLogger("taskrouter.janitor")

Processes = Callable[[], Sequence[Mapping[str, Any]]]


class Duties:
    def __init__(
        self,
        runtime: Runtime,
        info: WorkerInfo | None = None,
        *,
        processes: Processes | None = None,
        restarted: bool = False,
    ) -> None:
        self.runtime = runtime
        self.info = info
        self.processes = processes
        self.registry = WorkerRegistry(runtime.store, runtime.settings.worker_alive_window)
        self.reconciler = Reconciler(runtime)
        self.periodic = Periodic(runtime)
        self._next_housekeeping = 0.0
        # Leases cannot be renewed while Redis is unreachable; reap only after Redis has
        # been reachable for a whole lease, so that a running job's keeper renews first.
        self._up_since = time.monotonic()
        # After a crash, this worker's reserved Celery messages are those of its last life.
        self._held_before: float | None = time.time() if restarted else None

    @property
    def up_since(self) -> float:
        """Since when (time.monotonic()) Redis has answered every pass."""
        return self._up_since

    def tick(self) -> None:
        """One pass: beat, schedules, housekeeping when due, send due jobs. Never raises
        for an unreachable Redis (the next tick tries again)."""
        try:
            self.beat()
            self.periodic.run()
            settled = time.monotonic() - self._up_since >= self.runtime.settings.lease_ttl
            if settled and time.monotonic() >= self._next_housekeeping:
                self.housekeeping()
                interval = self.runtime.settings.janitor_interval
                self._next_housekeeping = time.monotonic() + interval
            self.runtime.pump()
        except TaskrouterError as exc:
            log.warning("janitor pass failed (will retry): %s", exc)
            self._up_since = time.monotonic()

    def beat(self) -> None:
        if self.info is None:
            return
        if self.processes is not None:
            self.info = replace(self.info, processes=tuple(self.processes()))
        self.registry.beat(self.info)

    def leave(self) -> None:
        if self.info is not None:
            try:
                self.registry.leave(self.info)
            except TaskrouterError as exc:
                log.warning("could not remove the heartbeat: %s", exc)

    def housekeeping(self) -> dict[str, int]:
        """The duties of every janitor interval; returns what each did."""
        store = self.runtime.store
        reaped = store.reap()
        for job_id, outcome in reaped:
            log.warning("job %s: its worker died; now %s", job_id, outcome)
        # Past the broker's window a queued Celery message is lost or held by a dead
        # worker (kombu restores those only then): send the job again.
        stale = store.requeue_stale(self.runtime.derived.visibility_timeout)
        for job_id in stale:
            log.warning("job %s: queued past the visibility window; dispatched again", job_id)
        return {
            "reaped": len(reaped),
            "requeued": len(stale) + self.requeue_dead_workers(),
            # Jobs deleted, canceled or lost in their engine (rq-dashboard, a Redis restart)
            **self.reconciler.run(),
            "swept": store.sweep(),
            "trimmed": trim.trim(self.runtime),
            "workflows": workflows.sweep(self.runtime),
            # Profiles that adaptive routing moved to another lane (adaptive.py).
            "switched": len(adaptive.adapt(store, self.runtime.derived.policy, self.registry.live)),
        }

    def requeue_dead_workers(self) -> int:
        """Give a new dispatch to the jobs whose messages a dead Celery worker reserved
        (kombu would give them back only after the visibility window)."""
        # It may have reserved messages after its last beat, and before it died, which
        # was at the latest one window later. Messages live workers reserved meanwhile
        # get a new dispatch too, which is harmless: their copy is refused at claim.
        window = self.registry.window_ms / 1000
        dead = [(name, beat / 1000 + window) for name, beat in self.registry.lapsed("celery")]
        if self._held_before is not None:
            dead.append(("(this worker, before its restart)", self._held_before))
            self._held_before = None
        sent = 0
        for name, before in dead:
            if name.startswith("(") or self.registry.forget("celery", name):
                again = self.runtime.requeue_held(before)
                if again:
                    log.warning(
                        "celery worker %s died holding %d jobs: sent again", name, len(again)
                    )
                sent += len(again)
        return sent

    def run_once(self) -> dict[str, int]:
        """One pass of every duty at once (``taskrouter janitor --once``)."""
        scheduled = sum(1 for _, _, job in self.periodic.run() if job)
        return {**self.housekeeping(), "scheduled": scheduled, "sent": self.runtime.pump()}
