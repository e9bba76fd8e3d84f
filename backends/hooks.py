"""Lifecycle hooks of a job in a worker process, as Dramatiq's middleware.

``WorkerHook`` has one no-op method per step of ``runner.run``; a hook overrides the
steps it cares about, and ``WorkerContext.emit`` fires every hook of the process in
order, in one place. Leases and workflow counting are hooks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskrouter.errors import TaskrouterError
from taskrouter.settings import LEASE_TTL

if TYPE_CHECKING:
    from .runner import Attempt
    from .runtime import Runtime
    from .store import Claim

log = logging.getLogger("taskrouter.worker")


class WorkerHook:
    """No-op lifecycle hooks; subclasses override what they need."""

    def before_claim(self, ctx: WorkerContext, job_id: str, dispatch: int) -> None:
        """A delivery arrived; nothing is known of the job yet."""

    def after_claim(self, ctx: WorkerContext, claim: Claim) -> None:
        """The claim answered (``claim.status`` says whether this delivery runs)."""

    def after_attempt(self, ctx: WorkerContext, claim: Claim, attempt: Attempt) -> None:
        """The task returned or raised; its end is not recorded yet."""

    def after_finish(self, ctx: WorkerContext, claim: Claim, attempt: Attempt, state: str) -> None:
        """The end is recorded; ``state`` is the record's state now."""


@dataclass(slots=True)
class WorkerContext:
    """What the code that runs jobs needs in a worker process: the runtime (never the
    process global), this worker's name and lease, and its hooks."""

    runtime: Runtime
    name: str
    lease_ms: int = int(LEASE_TTL * 1000)
    hooks: Sequence[WorkerHook] = ()

    def emit(self, step: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, step)(self, *args)

    def hook(self, kind: type[WorkerHook]) -> Any:
        """The hook of this type, if the context has one."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)


_context: WorkerContext | None = None


def install_context(ctx: WorkerContext) -> None:
    global _context
    _context = ctx


def installed() -> WorkerContext | None:
    """The context of this process, or None outside a worker."""
    return _context


def context() -> WorkerContext:
    if _context is None:
        raise TaskrouterError("this process is not a taskrouter worker (no WorkerContext)")
    return _context


# -- leases -----------------------------------------------------------------------------------


class LeaseHook(WorkerHook):
    """Renews the leases of the jobs this process runs, all in one batch per interval,
    from a daemon thread.

    Lives in the process that runs the task (RQ's work-horse, Celery's pool child, the I/O
    lane's process), so a lease lapses exactly when that process dies or hangs, and an
    orphaned work-horse that still runs keeps its job. ``on_lost`` is told of jobs this
    process no longer owns (canceled, or reaped), so that the I/O lane can stop them.
    """

    def __init__(self, on_lost: Callable[[str], None] | None = None) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pid = 0
        self._wake = threading.Event()
        self.on_lost = on_lost

    def after_claim(self, ctx: WorkerContext, claim: Claim) -> None:
        if claim.status == "ok":
            self.hold(ctx, claim.job_id, claim.token)

    def after_attempt(self, ctx: WorkerContext, claim: Claim, attempt: Attempt) -> None:
        self.release(claim.job_id)

    def hold(self, ctx: WorkerContext, job_id: str, token: str) -> None:
        with self._lock:
            self._held[job_id] = token
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                threading.Thread(
                    target=self._loop, args=(ctx,), name="taskrouter-lease", daemon=True
                ).start()

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    @property
    def held(self) -> int:
        return len(self._held)

    def _loop(self, ctx: WorkerContext) -> None:
        while True:
            self._wake.wait(ctx.lease_ms / 3000)
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                lost = ctx.runtime.store.renew(held, ctx.lease_ms)
            except TaskrouterError as exc:
                log.warning("could not renew leases: %s", exc)
                continue
            for job_id in lost:
                log.warning("job %s is no longer ours (canceled or reaped)", job_id)
                if self.on_lost is not None:
                    self.on_lost(job_id)


# -- workflows -----------------------------------------------------------------------


class WorkflowHook(WorkerHook):
    """Counts a workflow member's end, which may start the members waiting for it."""

    def after_finish(self, ctx: WorkerContext, claim: Claim, attempt: Attempt, state: str) -> None:
        if claim.workflow_id and state in ("succeeded", "failed"):
            from . import workflows

            workflows.count_finished(ctx.runtime, claim.job_id)


def default_hooks() -> list[WorkerHook]:
    return [LeaseHook(), WorkflowHook()]
