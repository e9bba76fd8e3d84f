"""The Job handle: one job's record, as any process sees it."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from . import codec
from .errors import DamagedRecord, JobFailed, JobTimeout, PayloadError
from .flow import checkpoints_of, progress_of
from .states import FINISHED, STATES, SUCCEEDED


class Refreshable(Protocol):
    state: str

    @property
    def finished(self) -> bool: ...

    def refresh(self) -> Any: ...


def wait_until_finished(handle: Refreshable, timeout: float | None, poll: float, what: str) -> None:
    """Refresh ``handle`` with a growing interval (``poll`` up to 200 ms) until it has
    finished; JobTimeout naming ``what`` after ``timeout`` seconds (None: forever)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = poll
    while True:
        handle.refresh()
        if handle.finished:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise JobTimeout(f"{what} still {handle.state} after {timeout} s")
        sleep = interval if deadline is None else min(interval, deadline - time.monotonic())
        time.sleep(max(sleep, 0))
        interval = min(interval * 2, 0.2)


class JobSource(Protocol):
    """Where a Job reads its record and sends its commands (the runtime)."""

    def read_record(self, job_id: str) -> Mapping[str, str] | None: ...

    def cancel_job(self, job_id: str) -> Mapping[str, str]: ...


def iso(ms: str | float | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds and a Z."""
    if ms in (None, ""):
        return None
    stamp = dt.datetime.fromtimestamp(float(ms) / 1000, tz=dt.UTC)  # type: ignore[arg-type]
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def number_or_none(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)  # type: ignore[arg-type]


N = TypeVar("N", int, float)


def _field(record: Mapping[str, str], name: str, kind: type[N]) -> N | None:
    value = record.get(name)
    if value in (None, ""):
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"field {name!r} is {str(value)[:64]!r}, not a number") from None


def _problem(exc: Exception) -> str:
    """What is wrong with a record, from the error its parsing raised."""
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field"
    if isinstance(exc, PayloadError):
        return f"field 'result' does not decode: {exc}"[:300]
    return str(exc)[:300]


@dataclass(slots=True)
class Job:
    """A job routed by taskrouter. ``refresh()`` re-reads it in one Redis round trip."""

    id: str
    task: str
    profile: str
    backend: str
    queue: str
    state: str
    attempts: int = 0
    max_attempts: int = 1
    created_at: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    workflow_id: str | None = None
    idempotency_key: str | None = None
    _result: str | None = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)
    _history: str | None = field(default=None, repr=False)
    _progress: str | None = field(default=None, repr=False)
    _checkpoints: str | None = field(default=None, repr=False)
    spend: float | None = None  # what its attempts charged (current_job().charge)
    _source: JobSource | None = field(default=None, repr=False, compare=False)
    _decoded: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(
        cls, record: Mapping[str, str], source: JobSource | None = None, job_id: str | None = None
    ) -> Job:
        """The job a record describes; ``job_id``, when known, is the id it was read by.

        DamagedRecord when the record lacks its id or state, or holds a field that does
        not parse (Redis keeps whatever any client writes under the key): reading a job
        never fails further on, in ``to_dict`` or ``result``.
        """
        try:
            job = cls._parse(record, source)
        except (KeyError, ValueError, TypeError, ArithmeticError, OSError) as exc:
            raise DamagedRecord(job_id or record.get("id"), _problem(exc)) from None
        if job_id is not None and job.id != job_id:
            raise DamagedRecord(job_id, f"its 'id' field says {job.id[:64]!r}")
        return job

    @classmethod
    def _parse(cls, record: Mapping[str, str], source: JobSource | None) -> Job:
        for required in ("id", "state"):
            if not record.get(required):
                raise KeyError(required)
        if record["state"] not in STATES:
            raise ValueError(f"state {record['state'][:64]!r} is not a job state")
        job = cls(
            id=record["id"],
            task=record.get("task", ""),
            profile=record.get("profile", ""),
            backend=record.get("backend", ""),
            queue=record.get("queue", ""),
            state=record["state"],
            attempts=_field(record, "attempts", int) or 0,
            max_attempts=_field(record, "max_attempts", int) or 1,
            created_at=_field(record, "created_at", float),
            queued_at=_field(record, "queued_at", float),
            started_at=_field(record, "started_at", float),
            finished_at=_field(record, "finished_at", float),
            workflow_id=record.get("workflow_id") or None,
            idempotency_key=record.get("idempotency_key") or None,
            _result=record.get("result") or None,
            _error=record.get("error") or None,
            _history=record.get("history") or None,
            _progress=record.get("progress") or None,
            _checkpoints=record.get("checkpoints") or None,
            spend=_field(record, "spend", float),
            _source=source,
        )
        progress_of(job._progress)  # garbled flow fields are damage too
        for value in checkpoints_of(job._checkpoints).values():
            codec.loads(value)
        for stamp in (job.created_at, job.started_at, job.finished_at):
            iso(stamp)  # a time the job JSON cannot show (a year past 9999) is damage too
        error = job.error
        if error is not None and not isinstance(error, dict):
            raise ValueError("field 'error' is not a JSON object")
        job._decoded = job.result  # what to_dict shows; decoded once
        return job

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def result(self) -> Any:
        """The decoded return value (None until the job succeeded)."""
        return None if self._result is None else codec.loads(self._result)

    @property
    def error(self) -> dict[str, str] | None:
        """``{"type": ..., "message": ...}`` of the last failure, or None."""
        return None if self._error is None else json.loads(self._error)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One entry per finished attempt: attempt, worker, started_at, finished_at (ms),
        and error when it failed (RQ keeps no per-attempt record; this does)."""
        return [] if self._history is None else list(json.loads(self._history))

    @property
    def progress(self) -> dict[str, Any] | None:
        """What the task last reported with ``current_job().progress``: ``fraction`` (0 to
        1), ``message`` and ``at`` (ms since the epoch); None if it never did."""
        return progress_of(self._progress)

    @property
    def checkpoints(self) -> dict[str, Any]:
        """Every checkpoint the job's attempts stored, decoded (``current_job().checkpoint``)."""
        return {k: codec.loads(v) for k, v in checkpoints_of(self._checkpoints).items()}

    def flow_dict(self) -> dict[str, Any]:
        """Progress, checkpoints and spend as plain JSON: the ``flow`` member that
        ``GET /jobs/{id}?include=flow`` adds to the contract's job JSON."""
        progress = self.progress
        if progress is not None:
            progress = {**progress, "at": iso(progress.get("at"))}
        return {
            "progress": progress,
            "checkpoints": {k: codec.plain(v) for k, v in self.checkpoints.items()},
            "spend": self.spend,
        }

    def _require_source(self) -> JobSource:
        if self._source is None:
            raise RuntimeError("this Job was built without a runtime; use router.get_job(id)")
        return self._source

    def refresh(self) -> Job:
        """Re-read the record; returns self."""
        from .errors import JobNotFound

        record = self._require_source().read_record(self.id)
        if record is None:
            raise JobNotFound(self.id)
        fresh = Job.from_record(record, self._source)
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(fresh, name))
        return self

    def wait(self, timeout: float | None = 60.0, *, poll: float = 0.002) -> Any:
        """Block until the job finishes; return its result or raise JobFailed.

        Polls the record with a growing interval (2 ms up to 200 ms). Raises JobTimeout
        when ``timeout`` seconds pass first (None waits forever).
        """
        wait_until_finished(self, timeout, poll, f"job {self.id}")
        if self.state == SUCCEEDED:
            return self.result
        err = self.error or {"type": "Canceled", "message": "the job was canceled"}
        raise JobFailed(self.id, self.state, err.get("type", ""), err.get("message", ""))

    def cancel(self) -> Job:
        """Cancel the job: a queued job never runs, a running one is stopped."""
        record = self._require_source().cancel_job(self.id)
        fresh = Job.from_record(record, self._source)
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(fresh, name))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The contract's job JSON (plain JSON: tuples as lists, datetimes as strings)."""
        return {
            "id": self.id,
            "task": self.task,
            "profile": self.profile,
            "backend": self.backend,
            "queue": self.queue,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "result": None if self._result is None else codec.plain(self._decoded),
            "error": self.error,
            "workflow_id": self.workflow_id,
        }
