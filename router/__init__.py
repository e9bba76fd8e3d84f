"""taskrouter: send each task to Celery or RQ by its profile; one job record per job."""

from __future__ import annotations

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
from .workflow import Signature, WorkflowFailed, WorkflowNotFound, chain, chord, get_workflow, group
from .workflow_handle import Workflow

__all__ = [
    "BackendUnavailable",
    "Job",
    "JobFailed",
    "JobNotFound",
    "JobStateConflict",
    "JobTimeout",
    "PayloadError",
    "PolicyError",
    "Signature",
    "Task",
    "TaskNotRegistered",
    "TaskrouterError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowNotFound",
    "chain",
    "chord",
    "get_job",
    "get_workflow",
    "group",
    "task",
]


def get_job(job_id: str) -> Job:
    """The job with this id, from any process; JobNotFound if it was never issued."""
    from ._runtime import current

    return current().get_job(job_id)
