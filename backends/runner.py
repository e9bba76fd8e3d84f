"""The code that runs one delivered job in a worker process, the same on every engine
and lane: claim the dispatch, run the task, record the end.

The engines only deliver ``(job_id, dispatch)``; the job record says what to run. A
delivery that does not own the job (a ghost copy from a broker redelivery, a message for
a canceled or finished job, a planted message with no record) runs nothing. Each step
fires the worker's hooks (``hooks.py``): leases and workflow counting live there.

``run`` does all three steps in the calling thread. The I/O lane claims in its pool
thread, awaits ``attempt_async`` on its event loop, then records the end with ``finish``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import reprlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from taskrouter import codec
from taskrouter.errors import BackendUnavailable, PayloadError, TaskNotRegistered
from taskrouter.flow import CurrentJob, retry_after_of, running
from taskrouter.policy import RetryAfterPolicy
from taskrouter.registry import lookup
from taskrouter.settings import REDIS_PATIENCE
from taskrouter.states import Outcome

from . import hooks
from .hooks import WorkerContext, context
from .store import Claim, now_ms

log = logging.getLogger("taskrouter.worker")

# Engine exceptions that mean "the profile's timeout was reached", by class name so that
# this module imports neither engine; the I/O lane raises TimeoutError.
_TIMEOUTS = frozenset(
    {"SoftTimeLimitExceeded", "TimeLimitExceeded", "JobTimeoutException", "TimeoutError"}
)
# A result this long or longer (in codec JSON) is shown to the engines' tools as a preview:
# the whole value is in the job record, and Redis should not hold every large result twice.
PREVIEW_CHARS = 4096
_preview = reprlib.Repr()
_preview.maxstring, _preview.maxother, _preview.maxlist, _preview.maxdict = 200, 200, 20, 20


@dataclass(slots=True)
class Attempt:
    """What one attempt did, before its end is recorded."""

    outcome: Outcome
    value: str  # the result's codec JSON, or the error JSON {type, message}
    started_ms: int
    finished_ms: int
    due_ms: int = 0  # when a retry may start
    result: Any = None  # the return value itself (the engines' own tools show it)
    error: BaseException | None = None  # what the task raised


@dataclass(slots=True)
class Ran:
    """The end of one delivery: the record's state (or why it did not run) and the
    attempt, when there was one."""

    state: str
    attempt: Attempt | None = None


def shown(done: Attempt) -> Any:
    """What an engine's own tools show as a job's result (Celery's task-succeeded event,
    RQ's result): the return value itself, or a bounded preview of a long one."""
    if len(done.value) < PREVIEW_CHARS:
        return done.result
    return f"{_preview.repr(done.result)} ({len(done.value)} characters; the job record has all)"


def error_json(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in _TIMEOUTS:
        return json.dumps({"type": "Timeout", "message": f"the job exceeded its timeout ({name})"})
    return json.dumps({"type": name, "message": str(exc)[:4000]})


T = TypeVar("T")


def patiently(what: str, call: Callable[[], T], patience: float = REDIS_PATIENCE) -> T:
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


def worker_of(ctx: WorkerContext) -> str:
    """How the record names the process running an attempt."""
    return f"{ctx.name}/{os.getpid()}"


def claim(ctx: WorkerContext, job_id: str, dispatch: int | str) -> Claim:
    """Claim a delivery; ``status`` "ok" when this delivery runs the job."""
    ctx.emit("before_claim", job_id, int(dispatch))
    token, me = uuid.uuid4().hex, worker_of(ctx)
    store = ctx.runtime.store
    got = patiently(
        f"claim of {job_id}", lambda: store.claim(job_id, dispatch, me, token, ctx.lease_ms)
    )
    if got.status == "limited":
        log.info("job %s waits for its profile's global limit until %s", job_id, got.detail)
    elif got.status != "ok":
        log.warning(
            "not running job %s dispatch %s: %s %s", job_id, dispatch, got.status, got.detail
        )
    ctx.emit("after_claim", got)
    return got


def resolve(claim: Claim) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The registered function and the call's arguments (TaskNotRegistered, PayloadError)."""
    fn: Callable[..., Any] = lookup(claim.task).fn
    args, kwargs = codec.decode_call(claim.payload)
    return fn, args, kwargs


def is_async(claim: Claim) -> bool:
    try:
        return inspect.iscoroutinefunction(lookup(claim.task).fn)
    except TaskNotRegistered:
        return False


def current_of(claim: Claim) -> CurrentJob:
    """What ``current_job()`` is while the claimed attempt runs: its writes go to the
    record through this process's store (detached in a process with no worker context)."""
    ctx = hooks.installed()
    store = ctx.runtime.store if ctx is not None else None
    return CurrentJob(claim.job_id, claim.attempts, claim.token, store)


def attempt(claim: Claim) -> Attempt:
    """Run the task in this thread (an ``async def`` task on an event loop of its own)."""
    started = now_ms()
    try:
        fn, args, kwargs = resolve(claim)
    except (TaskNotRegistered, PayloadError) as exc:
        return _unrunnable(exc, started)
    try:
        with running(current_of(claim)):
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
    except Exception as exc:
        return failure(claim, exc, started)
    return success(value, started)


async def attempt_async(claim: Claim, timeout: float | None) -> Attempt:
    """Await an ``async def`` task on the running loop, cancelled at ``timeout``."""
    started = now_ms()
    try:
        fn, args, kwargs = resolve(claim)
    except (TaskNotRegistered, PayloadError) as exc:
        return _unrunnable(exc, started)
    try:
        with running(current_of(claim)):
            async with asyncio.timeout(timeout):
                value = await fn(*args, **kwargs)
    except Exception as exc:  # TimeoutError included: error type Timeout
        return failure(claim, exc, started)
    return success(value, started)


def _unrunnable(exc: Exception, started: int) -> Attempt:
    # Retrying cannot help a task this process does not know, or a payload it cannot read.
    return Attempt("failed", error_json(exc), started, now_ms(), error=exc)


def failure(claim: Claim, exc: BaseException, started: int) -> Attempt:
    """The attempt raised: a RetryAfter (or, when the profile says so, an HTTP 429) waits
    without using an attempt; else a retry after the backoff if attempts remain, else
    failed."""
    finished = now_ms()
    rules = retry_after_rules(claim.profile)
    later = retry_after_of(exc, http_429=rules.http_429, default=rules.default)
    if later is not None:
        err = json.dumps({"type": "RetryAfter", "message": str(later)[:4000]})
        due = finished + int(later.seconds * 1000)
        return Attempt("later", err, started, finished, due, error=exc)
    if claim.attempts < claim.max_attempts:
        due = finished + int(claim.retry_delay() * 1000)
        return Attempt("retry", error_json(exc), started, finished, due, error=exc)
    return Attempt("failed", error_json(exc), started, finished, error=exc)


def retry_after_rules(profile: str) -> RetryAfterPolicy:
    """The profile's ``retry_after`` settings in this worker's policy (defaults if the
    process has no worker context or does not know the profile)."""
    ctx = hooks.installed()
    ps = ctx.runtime.derived.profiles.get(profile) if ctx is not None else None
    return ps.retry_after if ps is not None else RetryAfterPolicy()


def success(value: Any, started: int) -> Attempt:
    """The attempt returned ``value``: succeeded, or failed with PayloadError when the
    value cannot be stored (a type the codec refuses, an int json cannot write, a string
    with a lone surrogate, which no UTF-8 encoder accepts)."""
    finished = now_ms()
    try:
        encoded = codec.dumps(value, "the return value")
        encoded.encode("utf-8")
    except PayloadError as exc:
        return Attempt("failed", error_json(exc), started, finished, error=exc)
    except (ValueError, UnicodeError) as exc:
        bad = PayloadError(f"the return value cannot be stored as JSON text: {exc}")
        return Attempt("failed", error_json(bad), started, finished, error=bad)
    return Attempt("succeeded", encoded, started, finished, result=value)


def finish(ctx: WorkerContext, claim: Claim, done: Attempt, *, canvas: bool = False) -> str:
    """Record the end of an attempt; returns the record's state now.

    ``canvas``: the attempt is a member of a native Celery canvas, whose own retry brings
    the next attempt; the router's schedule then holds only a late fallback. Any failure
    to record the end other than an unreachable Redis ends the job once, failed with
    PayloadError, rather than leaving it to the lease (which would run it again).
    """
    ctx.emit("after_attempt", claim, done)
    if canvas and done.outcome == "retry":
        from .workflows import CANVAS_FALLBACK_MS

        done.due_ms += CANVAS_FALLBACK_MS
    status, state = _record(ctx, claim, done)
    if status != "ok":
        log.warning(
            "job %s ended %s but is now %s; outcome dropped", claim.job_id, done.outcome, state
        )
        return state
    ctx.emit("after_finish", claim, done, state)
    return state


def _record(ctx: WorkerContext, claim: Claim, done: Attempt) -> tuple[str, str]:
    store = ctx.runtime.store
    history: dict[str, Any] = {
        "attempt": claim.attempts,
        "worker": worker_of(ctx),
        "started_at": done.started_ms,
        "finished_at": done.finished_ms,
    }
    if done.outcome != "succeeded":
        history["error"] = json.loads(done.value)

    rules = retry_after_rules(claim.profile)

    def write(outcome: Outcome, value: str) -> tuple[str, str]:
        return store.finish(
            claim.job_id,
            claim.token,
            outcome,
            value,
            due_ms=done.due_ms,
            history=history,
            pause=rules.pause,
            max_waits=rules.max,
        )

    try:
        return patiently(f"end of {claim.job_id}", lambda: write(done.outcome, done.value))
    except BackendUnavailable:
        raise
    except Exception as exc:
        log.error("job %s: its end could not be recorded (%s); failing it", claim.job_id, exc)
        bad = PayloadError(f"the end of the attempt could not be recorded: {exc}")
        done.outcome, done.value, done.error = "failed", error_json(bad), bad
        history["error"] = json.loads(done.value)
        return patiently(f"end of {claim.job_id}", lambda: write("failed", done.value))


def run(
    job_id: str, dispatch: int | str, *, canvas: bool = False, ctx: WorkerContext | None = None
) -> Ran:
    """Run dispatch ``dispatch`` of a job if this delivery owns it."""
    ctx = ctx or context()
    got = claim(ctx, job_id, dispatch)
    if got.status != "ok":
        return Ran(got.status)
    done = attempt(got)
    return Ran(finish(ctx, got, done, canvas=canvas), done)
