"""The Workflow handle: an enqueued chain, group or chord, as any process sees it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import codec
from .errors import WorkflowFailed, WorkflowNotFound
from .job import Job, JobSource, iso, number_or_none, wait_until_finished
from .states import FINISHED, QUEUED, RUNNING, STARTED, SUCCEEDED


class WorkflowSource(Protocol):
    """Where a Workflow reads its records and sends its commands."""

    @property
    def jobs(self) -> JobSource: ...

    def read_workflow(
        self, workflow_id: str
    ) -> tuple[Mapping[str, str], Sequence[Mapping[str, str]]] | None: ...

    def cancel_workflow(self, workflow_id: str) -> None: ...


@dataclass(slots=True)
class Workflow:
    """A chain, group or chord that was enqueued; one job per task call in ``jobs``."""

    id: str
    kind: str
    mode: str  # "celery" (a native canvas) or "per-step"
    state: str
    jobs: list[Job]
    created_at: float | None = None
    finished_at: float | None = None
    _result: str | None = field(default=None, repr=False)
    _error: Mapping[str, Any] | None = field(default=None, repr=False)
    _source: WorkflowSource | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_records(
        cls,
        record: Mapping[str, str],
        members: Sequence[Mapping[str, str]],
        source: WorkflowSource | None = None,
    ) -> Workflow:
        jobs = [Job.from_record(m, source.jobs if source else None) for m in members]
        error = record.get("error")
        return cls(
            id=record["id"],
            kind=record.get("kind", ""),
            mode=record.get("mode", ""),
            state=aggregate_state(record.get("state", QUEUED), [j.state for j in jobs]),
            jobs=jobs,
            created_at=number_or_none(record.get("created_at")),
            finished_at=number_or_none(record.get("finished_at")),
            _result=record.get("result") or None,
            _error=json.loads(error) if error else None,
            _source=source,
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def result(self) -> Any:
        """The final result: the chain's last step's, the chord body's, or the list of a
        group's (None where a member did not succeed). None until the workflow ended."""
        return None if self._result is None else codec.loads(self._result)

    @property
    def error(self) -> dict[str, Any] | None:
        """The first failure: ``type``, ``message``, ``job_id``, ``task`` and ``member``."""
        return None if self._error is None else dict(self._error)

    def _require_source(self) -> WorkflowSource:
        if self._source is None:
            raise RuntimeError("this Workflow was built without a runtime; use get_workflow(id)")
        return self._source

    def refresh(self) -> Workflow:
        """Re-read the workflow and every member; returns self."""
        source = self._require_source()
        records = source.read_workflow(self.id)
        if records is None:
            raise WorkflowNotFound(self.id)
        fresh = Workflow.from_records(*records, source)
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(fresh, name))
        return self

    def wait(self, timeout: float | None = 60.0, *, poll: float = 0.005) -> Any:
        """Block until the workflow ends; return its result or raise WorkflowFailed (a
        JobFailed naming the member that failed). JobTimeout after ``timeout`` seconds."""
        wait_until_finished(self, timeout, poll, f"workflow {self.id}")
        if self.state == SUCCEEDED:
            return self.result
        error = self._error or {"type": "Canceled", "message": "the workflow was canceled"}
        raise WorkflowFailed(self.id, self.state, error, self.result)

    def cancel(self) -> Workflow:
        """Cancel every member not yet finished (running ones are stopped); returns self."""
        self._require_source().cancel_workflow(self.id)
        return self.refresh()

    def to_dict(self) -> dict[str, Any]:
        """The workflow as plain JSON: aggregate state, each member job, the result."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        return {
            "id": self.id,
            "kind": self.kind,
            "mode": self.mode,
            "state": self.state,
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
            "result": None if self._result is None else codec.plain(self.result),
            "error": None if self._error is None else codec.plain(dict(self._error)),
            "counts": counts,
            "jobs": [job.to_dict() for job in self.jobs],
        }


def aggregate_state(stored: str, member_states: Iterable[str]) -> str:
    """The workflow's state: as stored once it ended; before that, running as soon as any
    member started, else queued."""
    if stored in FINISHED:
        return stored
    return RUNNING if any(s in STARTED for s in member_states) else QUEUED
