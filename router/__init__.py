"""taskrouter: send each task to Celery or RQ by its profile; one job record per job."""

from __future__ import annotations

from .errors import (
    BackendUnavailable,
    BudgetExceeded,
    JobFailed,
    JobLost,
    JobNotFound,
    JobStateConflict,
    JobTimeout,
    PayloadError,
    PolicyError,
    RetryAfter,
    TaskNotRegistered,
    TaskrouterError,
)
from .flow import CurrentJob, current_job
from .job import Job
from .registry import Task, task
from .workflow import Signature, WorkflowFailed, WorkflowNotFound, chain, chord, get_workflow, group
from .workflow_handle import Workflow

__all__ = [
    "BackendUnavailable",
    "BudgetExceeded",
    "CurrentJob",
    "Job",
    "JobFailed",
    "JobLost",
    "JobNotFound",
    "JobStateConflict",
    "JobTimeout",
    "PayloadError",
    "PolicyError",
    "RetryAfter",
    "Signature",
    "Task",
    "TaskNotRegistered",
    "TaskrouterError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowNotFound",
    "chain",
    "chord",
    "current_job",
    "get_job",
    "get_workflow",
    "group",
    "task",
]


def get_job(job_id: str) -> Job:
    """The job with this id, from any process; JobNotFound if it was never issued."""
    from ._runtime import current

    return current().get_job(job_id)
