"""Every error taskrouter raises, under one root.

    TaskrouterError
    ├── PolicyError            a policy file is invalid (file:line: key: message)
    ├── PayloadError           an argument or result the codec cannot encode (also a TypeError)
    ├── TaskNotRegistered      a task name that no @task registered
    ├── JobNotFound            a job id that was never issued, or whose record expired
    │   └── WorkflowNotFound   the same, for a workflow id
    ├── JobFailed              the job ended failed or canceled; carries the remote error
    │   └── WorkflowFailed     a workflow ended failed or canceled; names the member
    ├── JobTimeout             wait() gave up before the job finished (also a TimeoutError)
    ├── JobStateConflict       the job is not in a state that allows the operation
    ├── JobLost                inside a task: its attempt no longer owns the job
    ├── RetryAfter             raised by a task: run me again after N seconds, no attempt used
    ├── BudgetExceeded         enqueue refused: the profile spent its budget for this window
    ├── InvalidQuery           a listing's filter, limit or cursor is not usable (a ValueError)
    ├── DescriptionError       a JSON description of a workflow is invalid (a ValueError)
    ├── RefusedJob             an engine message names something taskrouter does not run
    ├── DamagedRecord          a job record in Redis has a field missing or garbled
    ├── BackendUnavailable     Redis, the Celery broker or an engine cannot be reached
    │   └── StorageFull        Redis refuses writes: it reached maxmemory
    ├── BackendError           Redis or an engine refused a command for another reason
    └── ServerError            the embedded Redis server cannot be started or is too old

    MemberFailed               (not a TaskrouterError) raised inside a native Celery canvas
                               member so that Celery stops the chain or fails the chord

Engine exceptions (redis, kombu, celery, rq) never leak out of ``backends/``: each is
mapped to one of these by the table in ``backends/errors.py`` and raised ``from`` the
original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class TaskrouterError(Exception):
    """Raised for any error of taskrouter itself; the root of the tree."""


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class PolicyError(TaskrouterError):
    """Raised when a policy file cannot be read or is invalid; lists every problem found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PayloadError(TaskrouterError, TypeError):
    """Raised when an argument or a result cannot be encoded as taskrouter JSON."""


class TaskNotRegistered(TaskrouterError, LookupError):
    """Raised when a task name is not registered in the running process."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"task {name!r} is not registered: import the module that defines it "
            "(worker/api --app MODULE) or check the name"
        )


class JobNotFound(TaskrouterError, LookupError):
    """Raised when a job id was never issued, or its record has expired."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found")


class WorkflowNotFound(JobNotFound):
    """Raised when a workflow id was never issued, or its record has expired."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id)
        self.args = (f"workflow {workflow_id!r} not found",)


class JobFailed(TaskrouterError):
    """Raised by Job.wait() when the job ended failed or canceled."""

    def __init__(self, job_id: str, state: str, error_type: str, message: str) -> None:
        self.job_id = job_id
        self.state = state
        self.type = error_type
        self.message = message
        super().__init__(f"job {job_id} {state}: {error_type}: {message}")


class WorkflowFailed(JobFailed):
    """Raised by Workflow.wait() when the workflow failed or was canceled.

    ``job_id``, ``type`` and ``message`` are those of the member that failed first;
    ``result`` holds what the workflow produced anyway (a group's partial results).
    """

    def __init__(
        self,
        workflow_id: str,
        state: str,
        error: Mapping[str, Any],
        result: Any = None,
    ) -> None:
        super().__init__(
            str(error.get("job_id") or workflow_id),
            state,
            str(error.get("type", "")),
            str(error.get("message", "")),
        )
        self.workflow_id = workflow_id
        self.member = str(error.get("member", ""))
        self.result = result

    def __str__(self) -> str:
        head = f"workflow {self.workflow_id} {self.state}"
        if not self.member:
            return f"{head}: {self.message}"
        if self.type == "Canceled":
            return f"{head}: {self.member} was canceled"
        return f"{head}: {self.member} failed: {self.type}: {self.message}"


class JobTimeout(TaskrouterError, TimeoutError):
    """Raised by Job.wait() when the job has not finished within the timeout."""


class JobStateConflict(TaskrouterError):
    """Raised when an operation does not fit the job's state (cancel a finished job...)."""


class JobLost(TaskrouterError):
    """Raised inside a task when its attempt no longer owns the job (canceled, or reaped
    after its lease lapsed), so that it stops paying for calls whose outcome is dropped."""

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"job {job_id} is {state}: this attempt no longer owns it")


# A day: a longer wait is a schedule, not a provider's back-off.
MAX_RETRY_AFTER = 86400.0


class RetryAfter(TaskrouterError):
    """Raised by a task to be run again after ``seconds`` without using an attempt (a
    provider's rate limit said "not now"); ``reason`` goes into the job's history."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if not (isinstance(seconds, int | float) and 0 <= seconds <= MAX_RETRY_AFTER):
            raise ValueError(f"RetryAfter seconds must be 0 to {MAX_RETRY_AFTER}; got {seconds!r}")
        self.seconds = float(seconds)
        self.reason = reason
        super().__init__(f"retry after {self.seconds:g} s" + (f": {reason}" if reason else ""))


class BudgetExceeded(TaskrouterError):
    """Raised at enqueue when the profile (or the call's limit key) has spent its budget
    for the current window and its policy says ``when_reached: refuse``."""

    def __init__(
        self, profile: str, spent: float, limit: float, retry_in: float, key: str = ""
    ) -> None:
        self.profile = profile
        self.retry_in = retry_in
        whose = f"limit key {key!r} of profile {profile!r}" if key else f"profile {profile!r}"
        super().__init__(
            f"{whose} has spent {spent:g} of its budget of {limit:g} for this window; "
            f"new jobs are refused for {retry_in:.0f} s more (policy: budget.when_reached: refuse)"
        )


class InvalidQuery(TaskrouterError, ValueError):
    """Raised when a listing's filter, limit or cursor is not usable."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


class DescriptionError(TaskrouterError, ValueError):
    """Raised when a JSON description of a workflow is invalid; ``loc`` locates the part
    (``("steps", 2, "task")``)."""

    def __init__(self, loc: tuple[str | int, ...], problem: str) -> None:
        self.loc = loc
        self.problem = problem
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        super().__init__(f"workflow{where}: {problem}")


class RefusedJob(TaskrouterError):
    """Raised when an engine message names anything but a task taskrouter runs."""


class DamagedRecord(TaskrouterError):
    """Raised when a job record in Redis cannot be read: a field is missing or garbled."""

    def __init__(self, job_id: str | None, problem: str) -> None:
        self.job_id = job_id
        self.problem = problem
        which = f"job {job_id!r}" if job_id else "a job"
        super().__init__(
            f"the record of {which} is damaged ({problem}): taskrouter did not write it so "
            "and cannot read it; delete the key, or restore it from a backup"
        )


class BackendUnavailable(TaskrouterError, ConnectionError):
    """Raised when Redis, the Celery broker or an engine cannot be reached."""

    def __init__(self, component: str, detail: str) -> None:
        self.component = component
        self.detail = detail
        super().__init__(f"{component} unavailable: {detail}")


class StorageFull(BackendUnavailable):
    """Raised when Redis refuses a write because it reached its maxmemory limit."""

    def __init__(self, component: str, detail: str) -> None:
        super().__init__(component, detail)
        self.args = (
            f"{component} is out of memory (maxmemory reached, writes refused): {detail}; "
            "free memory, shorten keep_results, or raise maxmemory",
        )


class BackendError(TaskrouterError):
    """Raised when Redis or an engine refused a command for a reason other than being
    unreachable or full (a wrong key type, a script error)."""

    def __init__(self, component: str, detail: str) -> None:
        self.component = component
        self.detail = detail
        super().__init__(f"{component} refused a command: {detail}")


class ServerError(TaskrouterError):
    """Raised when the embedded Redis-compatible server cannot be started or is unusable."""


class MemberFailed(Exception):
    """Raised in a native Celery canvas member whose job failed, so that Celery stops the
    chain or fails the chord; the job record holds the real error. Deliberately not a
    TaskrouterError: it exists for Celery's canvas machinery, never for callers."""
