"""Worker side, the same on both engines: claim a dispatch, run the task, record the end.

The engines only deliver ``(job_id, dispatch)``; the job record says what to run. A
delivery that does not own the job (a ghost copy from a broker redelivery, a message for
a canceled or finished job, a planted message with no record) runs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from taskrouter import codec
from taskrouter.errors import BackendUnavailable, PayloadError, TaskNotRegistered, TaskrouterError
from taskrouter.registry import lookup
from taskrouter.settings import LEASE_TTL

from . import workflows
from .store import Claim, JobStore, now_ms

log = logging.getLogger("taskrouter.worker")

# Engine exceptions that mean "the profile's timeout was reached", by class name so that
# this module imports neither engine.
_TIMEOUTS = frozenset({"SoftTimeLimitExceeded", "TimeLimitExceeded", "JobTimeoutException"})


@dataclass(slots=True)
class WorkerContext:
    store: JobStore
    name: str
    lease_ms: int = int(LEASE_TTL * 1000)


_context: WorkerContext | None = None


def install_context(ctx: WorkerContext) -> None:
    global _context
    _context = ctx


def context() -> WorkerContext:
    if _context is None:
        raise TaskrouterError("this process is not a taskrouter worker (no WorkerContext)")
    return _context


def worker_name(engine: str) -> str:
    return f"{engine}@{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    """Renews the leases of the jobs this process runs, from a daemon thread.

    Lives in the process that runs the task (RQ's work-horse, Celery's pool child), so
    a lease lapses exactly when that process dies or hangs, and an orphaned work-horse
    that still runs keeps its job.
    """

    def __init__(self) -> None:
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pid = 0
        self._wake = threading.Event()

    def hold(self, job_id: str, token: str) -> None:
        with self._lock:
            self._held[job_id] = token
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="taskrouter-lease", daemon=True).start()

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def _loop(self) -> None:
        while True:
            ctx = context()
            self._wake.wait(ctx.lease_ms / 3000)
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                lost = ctx.store.renew(held, ctx.lease_ms)
            except TaskrouterError as exc:
                log.warning("could not renew leases: %s", exc)
                continue
            for job_id in lost:
                log.warning("job %s is no longer ours (canceled or reaped)", job_id)


_keeper = LeaseKeeper()


def error_json(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in _TIMEOUTS:
        return json.dumps({"type": "Timeout", "message": f"the job exceeded its timeout ({name})"})
    return json.dumps({"type": name, "message": str(exc)[:4000]})


def _attempt(claim: Claim) -> tuple[str, str, int]:
    """Run one attempt: (outcome, result or error JSON, due time for a retry)."""
    try:
        fn: Callable[..., Any] = lookup(claim.task).fn
        args, kwargs = codec.decode_call(claim.payload)
    except (TaskNotRegistered, PayloadError) as exc:
        return "failed", error_json(exc), 0  # retrying cannot help
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:
        err = error_json(exc)
        if claim.attempts < claim.max_attempts:
            delay = (
                claim.delays[min(claim.attempts, len(claim.delays)) - 1] if claim.delays else 0.0
            )
            return "retry", err, now_ms() + int(delay * 1000)
        return "failed", err, 0
    try:
        return "succeeded", codec.dumps(value, "the return value"), 0
    except PayloadError as exc:
        return "failed", error_json(exc), 0


T = TypeVar("T")


def _patiently(what: str, call: Callable[[], T], patience: float = 120.0) -> T:
    """Retry a record write while Redis is unreachable (a restart, a failover).

    The message is already in this worker's hands and the outcome may have cost a paid
    call: wait for Redis rather than drop either.
    """
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        try:
            return call()
        except BackendUnavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: Redis unreachable (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def run(job_id: str, dispatch: int | str, *, canvas: bool = False) -> str:
    """Run dispatch ``dispatch`` of a job if this delivery owns it; returns the outcome.

    ``canvas``: the delivery is a member of a native Celery canvas (celery_canvas.py).
    """
    ctx = context()
    token = uuid.uuid4().hex
    me = f"{ctx.name}/{os.getpid()}"
    claim = _patiently(
        f"claim of {job_id}", lambda: ctx.store.claim(job_id, dispatch, me, token, ctx.lease_ms)
    )
    if claim.status == "limited":
        log.info("job %s waits for its profile's global limit until %s", job_id, claim.detail)
        return claim.status
    if claim.status != "ok":
        log.warning(
            "not running job %s dispatch %s: %s %s", job_id, dispatch, claim.status, claim.detail
        )
        return claim.status
    started = time.time()
    _keeper.hold(job_id, token)
    try:
        outcome, value, due = _attempt(claim)
    finally:
        _keeper.release(job_id)
    history: dict[str, Any] = {
        "attempt": claim.attempts,
        "worker": me,
        "started_at": int(started * 1000),
        "finished_at": now_ms(),
    }
    if outcome != "succeeded":
        history["error"] = json.loads(value)
    if canvas and outcome == "retry":
        # [workflows] Celery's own retry brings the next attempt and keeps the canvas
        # going; the router's schedule holds only a late fallback in case it is lost.
        due += workflows.CANVAS_FALLBACK_MS
    status, state = _patiently(
        f"end of {job_id}",
        lambda: ctx.store.finish(job_id, token, outcome, value, due_ms=due, history=history),
    )
    if status != "ok":
        log.warning("job %s ended %s but is now %s; outcome dropped", job_id, outcome, state)
        return state
    if claim.workflow_id and state in ("succeeded", "failed"):
        workflows.on_member_finished(ctx.store, job_id, claim.workflow_id, state, value)
    return state
