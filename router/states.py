"""The unified job states, and how every native state of both engines maps to them.

The job record is the source of truth for a job's state; the table below is what the
record would say for each native state, used where engine state must be read (recovery)
and documented in the README.
"""

from __future__ import annotations

from typing import Final, Literal

QUEUED: Final = "queued"
SCHEDULED: Final = "scheduled"
RUNNING: Final = "running"
RETRYING: Final = "retrying"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
CANCELED: Final = "canceled"

State = Literal["queued", "scheduled", "running", "retrying", "succeeded", "failed", "canceled"]
STATES: Final = (QUEUED, SCHEDULED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELED)
FINISHED: Final = frozenset({SUCCEEDED, FAILED, CANCELED})
WAITING: Final = frozenset({QUEUED, SCHEDULED, RETRYING})
# A workflow is running once any member got this far.
STARTED: Final = frozenset({RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELED})

# What the record scripts (backends/lua) answer, by script.
ClaimStatus = Literal["ok", "missing", "finished", "stale", "duplicate", "limited"]
# What an attempt asks finish.lua to record ("later": a RetryAfter, no attempt used).
Outcome = Literal["succeeded", "failed", "retry", "later"]
FinishStatus = Literal["ok", "lost"]
CancelStatus = Literal["ok", "missing", "finished"]
ArriveStatus = Literal["ok", "waiting", "missing", "finished", "stale"]

# (engine, native state) -> (unified state, why). Every native state of Celery 5.7 and
# RQ 3.0 is listed, so that a new one shows up as a missing row, not a silent "queued".
NATIVE_STATES: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("celery", "PENDING"): (QUEUED, "Celery says PENDING for unknown ids too; the record decides"),
    ("celery", "RECEIVED"): (QUEUED, "a worker holds the message but has not started it"),
    ("celery", "STARTED"): (RUNNING, "only reported with task_track_started"),
    ("celery", "RETRY"): (RETRYING, "between attempts"),
    ("celery", "SUCCESS"): (SUCCEEDED, ""),
    ("celery", "FAILURE"): (FAILED, "including WorkerLostError and time limits"),
    ("celery", "REVOKED"): (CANCELED, "revoked before or while running"),
    ("celery", "REJECTED"): (FAILED, "the worker refused the message"),
    ("celery", "IGNORED"): (SUCCEEDED, "the task chose not to store a result"),
    ("rq", "created"): (QUEUED, "created, not yet pushed to a queue"),
    ("rq", "queued"): (QUEUED, ""),
    ("rq", "ready_to_enqueue"): (QUEUED, "a dependency finished; being pushed to its queue"),
    ("rq", "rate_limited"): (SCHEDULED, "held back by RQ's own rate limit"),
    ("rq", "deferred"): (SCHEDULED, "waiting for a dependency"),
    ("rq", "scheduled"): (SCHEDULED, "waiting for a time"),
    ("rq", "started"): (RUNNING, "a work-horse runs it (or died: see the janitor)"),
    ("rq", "finished"): (SUCCEEDED, ""),
    ("rq", "failed"): (FAILED, ""),
    ("rq", "stopped"): (CANCELED, "stopped by send_stop_job_command"),
    ("rq", "canceled"): (CANCELED, ""),
}


def from_native(engine: str, native: str) -> str:
    """The unified state for an engine's own state name."""
    try:
        return NATIVE_STATES[(engine, native)][0]
    except KeyError:
        raise ValueError(f"unknown {engine} state {native!r}") from None
