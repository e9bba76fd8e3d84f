"""Every error taskrouter raises, under one root.

    TaskrouterError
    ├── PolicyError            a policy file is invalid (file:line: key: message)
    ├── PayloadError           an argument or result the codec cannot encode (also a TypeError)
    ├── TaskNotRegistered      a task name that no @task registered
    ├── JobNotFound            a job id that was never issued, or whose record expired
    ├── JobFailed              the job ended failed or canceled; carries the remote error
    ├── JobTimeout             wait() gave up before the job finished (also a TimeoutError)
    ├── JobStateConflict       the job is not in a state that allows the operation
    ├── DamagedRecord          a job record in Redis has a field missing or garbled
    ├── BackendUnavailable     Redis, the Celery broker or an engine cannot be reached
    └── ServerError            the embedded Redis server cannot be started or is too old

Engine exceptions (redis, kombu, celery, rq) never leak out of ``backends/``: each is
mapped to one of these and raised ``from`` the original.
"""

from __future__ import annotations

from dataclasses import dataclass


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


class JobFailed(TaskrouterError):
    """Raised by Job.wait() when the job ended failed or canceled."""

    def __init__(self, job_id: str, state: str, error_type: str, message: str) -> None:
        self.job_id = job_id
        self.state = state
        self.type = error_type
        self.message = message
        super().__init__(f"job {job_id} {state}: {error_type}: {message}")


class JobTimeout(TaskrouterError, TimeoutError):
    """Raised by Job.wait() when the job has not finished within the timeout."""


class JobStateConflict(TaskrouterError):
    """Raised when an operation does not fit the job's state (cancel a finished job...)."""


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


class ServerError(TaskrouterError):
    """Raised when the embedded Redis-compatible server cannot be started or is unusable."""
