"""taskrouter: send each task to Celery or RQ by its profile; one job record per job."""

from __future__ import annotations

from typing import Any

from .errors import (
    BackendUnavailable,
    JobFailed,
    JobNotFound,
    JobStateConflict,
    JobTimeout,
    PayloadError,
    PolicyError,
    TaskNotRegistered,
    TaskrouterError,
)
from .job import Job
from .registry import Task, task

__all__ = [
    "BackendUnavailable",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobStateConflict",
    "JobTimeout",
    "PayloadError",
    "PolicyError",
    "Task",
    "TaskNotRegistered",
    "TaskrouterError",
    "chain",
    "chord",
    "get_job",
    "group",
    "task",
]


def get_job(job_id: str) -> Job:
    """The job with this id, from any process; JobNotFound if it was never issued."""
    from ._runtime import current

    return current().get_job(job_id)


def __getattr__(name: str) -> Any:
    if name in ("chain", "group", "chord", "Workflow"):
        from . import workflow

        return getattr(workflow, name)
    raise AttributeError(name)
