"""What a running task knows of its own job: ``current_job()``.

A task reports how far it got (``progress``) and stores values a later attempt reads
back (``checkpoint`` / ``checkpoints``), so that an attempt after a crash, a timeout or
a ``RetryAfter`` resumes where the last one stopped instead of paying for its steps
again::

    from taskrouter import current_job, task

    @task(profile="llm")
    def pipeline(doc_id: str) -> dict:
        job = current_job()
        done = job.checkpoints              # {} on the first attempt
        for i, step in enumerate(STEPS):
            if step.name in done:
                continue                    # paid for by an earlier attempt
            done[step.name] = step.run(doc_id, done)
            job.checkpoint(step.name, done[step.name])
            job.progress((i + 1) / len(STEPS), f"{step.name} done")
        return done

Every write goes to the job record and only while this attempt owns the job: a write
from an attempt that was canceled or reaped raises ``JobLost``. Outside a worker (a
plain call of the task) ``current_job()`` is a detached job that keeps its checkpoints
in memory for that call, so a task runs the same when called inline.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import email.utils
import json
import math
from collections.abc import Iterator
from typing import Any, Protocol

from . import codec
from .errors import MAX_RETRY_AFTER, PayloadError, RetryAfter

# A checkpoint is for a step's result (a summary, a list of ids), not for blobs: the
# record holds every checkpoint and each read of the job brings them.
MAX_CHECKPOINT_CHARS = 256 * 1024
MAX_CHECKPOINTS_CHARS = 1024 * 1024
MAX_MESSAGE_CHARS = 500
MAX_NAME_CHARS = 200


def checkpoints_of(text: str | None) -> dict[str, str]:
    """The record's ``checkpoints`` field as {name: codec JSON}; ValueError if garbled."""
    if not text:
        return {}
    found = json.loads(text)
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise ValueError("field 'checkpoints' is not a JSON object of strings")
    return found


def progress_of(text: str | None) -> dict[str, Any] | None:
    """The record's ``progress`` field as {fraction, message, at (ms)}; ValueError if garbled."""
    if not text:
        return None
    found = json.loads(text)
    if not isinstance(found, dict) or not isinstance(found.get("fraction"), int | float):
        raise ValueError("field 'progress' is not a JSON object with a fraction")
    return found


class FlowPort(Protocol):
    """Where a running attempt's writes go (``backends.store.JobStore``)."""

    def write_progress(self, job_id: str, token: str, fraction: float, message: str) -> None: ...

    def write_checkpoint(self, job_id: str, token: str, name: str, value: str) -> None: ...

    def read_checkpoints(self, job_id: str) -> dict[str, str]: ...

    def write_charge(self, job_id: str, token: str, amount: float) -> None: ...


class CurrentJob:
    """The job of the running attempt (see the module docstring)."""

    def __init__(
        self, job_id: str | None, attempt: int, token: str = "", port: FlowPort | None = None
    ) -> None:
        self.id = job_id
        self.attempt = attempt
        self._token = token
        self._port = port
        self._checkpoints: dict[str, str] | None = None if port else {}
        self.charged = 0.0  # what this attempt charged so far

    @property
    def detached(self) -> bool:
        """True outside a worker: writes stay in this object."""
        return self._port is None

    def progress(self, fraction: float, message: str = "") -> None:
        """How far the attempt got, 0.0 to 1.0, and a short message ("page 3 of 10")."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise TypeError(f"progress must be a number from 0 to 1; got {fraction!r}")
        if not (math.isfinite(fraction) and 0 <= fraction <= 1):
            raise ValueError(f"progress must be from 0 to 1; got {fraction!r}")
        if not isinstance(message, str):
            raise TypeError(f"the progress message must be a string; got {type(message).__name__}")
        if self._port is not None and self.id is not None:
            self._port.write_progress(
                self.id, self._token, float(fraction), message[:MAX_MESSAGE_CHARS]
            )

    def checkpoint(self, name: str, value: Any) -> None:
        """Store ``value`` (anything the codec encodes) under ``name`` in the record; a
        later attempt of this job reads it back in ``checkpoints``."""
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"a checkpoint name is a string of 1 to {MAX_NAME_CHARS} characters")
        encoded = codec.dumps(value, f"checkpoint {name!r}")
        if len(encoded) > MAX_CHECKPOINT_CHARS:
            raise PayloadError(
                f"checkpoint {name!r} is {len(encoded)} characters of JSON; the limit is "
                f"{MAX_CHECKPOINT_CHARS}: store the value elsewhere and checkpoint its key"
            )
        if self._port is not None and self.id is not None:
            self._port.write_checkpoint(self.id, self._token, name, encoded)
        if self._checkpoints is not None:
            self._checkpoints[name] = encoded

    def charge(self, amount: float) -> None:
        """What the call cost (dollars, credits: the unit of the profile's ``budget``):
        added to the job record's ``spend`` and to the profile's (and its key's) spend
        in the current budget window."""
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"a charge is a number; got {amount!r}")
        if not (math.isfinite(amount) and 0 <= amount < 1e12):
            raise ValueError(f"a charge is a finite amount >= 0; got {amount!r}")
        if self._port is not None and self.id is not None and amount:
            self._port.write_charge(self.id, self._token, float(amount))
        self.charged += amount

    @property
    def checkpoints(self) -> dict[str, Any]:
        """Every checkpoint of this job so far (of earlier attempts and this one), decoded;
        a new dict on each read."""
        if self._checkpoints is None and self._port is not None and self.id is not None:
            self._checkpoints = dict(self._port.read_checkpoints(self.id))
        return {k: codec.loads(v) for k, v in (self._checkpoints or {}).items()}


_current: contextvars.ContextVar[CurrentJob | None] = contextvars.ContextVar(
    "taskrouter_current_job", default=None
)


def current_job() -> CurrentJob:
    """The job of the attempt running in this thread or asyncio task; a detached job
    (writes kept in memory) when the task was called directly."""
    job = _current.get()
    return CurrentJob(None, 0) if job is None else job


@contextlib.contextmanager
def running(job: CurrentJob) -> Iterator[CurrentJob]:
    """Make ``job`` the current job while the block runs (the worker's runner)."""
    reset = _current.set(job)
    try:
        yield job
    finally:
        _current.reset(reset)


def retry_after_of(exc: BaseException, *, http_429: bool, default: float) -> RetryAfter | None:
    """The RetryAfter that ``exc`` stands for: itself, or (``http_429``) an HTTP 429 error
    of httpx or requests, or one that caused ``exc``, with its ``Retry-After`` header in
    seconds or as a date (``default`` seconds when it has none that parses)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RetryAfter):
            return current
        if http_429 and (response := _http_429(current)) is not None:
            seconds = _header_seconds(response)
            wait = default if seconds is None else seconds
            return RetryAfter(wait, f"HTTP 429 from {_host(response)}")
        current = current.__cause__ or current.__context__
    return None


def _http_429(exc: BaseException) -> Any:
    # httpx.HTTPStatusError and requests.HTTPError both carry .response; matched by
    # module so that neither library is imported here.
    if type(exc).__module__.split(".")[0] not in ("httpx", "requests"):
        return None
    response = getattr(exc, "response", None)
    return response if getattr(response, "status_code", None) == 429 else None


def _header_seconds(response: Any) -> float | None:
    try:
        value = str(response.headers.get("Retry-After", "")).strip()
    except Exception:
        return None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _host(response: Any) -> str:
    url = getattr(getattr(response, "request", None), "url", None) or getattr(response, "url", "")
    text = str(url)
    return text.split("/")[2] if text.count("/") >= 2 else "the provider"
