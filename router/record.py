"""The fields of a job record (a Redis hash, ``Keys.job``), in one place.

The Lua scripts in ``backends/lua`` write them; ``backends/store.py`` is the only Python
code that reads or writes a record; readers take their field lists from here.
"""

from __future__ import annotations

from typing import Final

# What the job is and where it runs (written once, at creation).
IDENTITY: Final = ("id", "task", "profile", "backend", "queue", "lane", "workflow_id")
# The call and how to retry it.
CALL: Final = (
    *("payload", "max_attempts", "delays", "keep_ms", "idempotency_key", "retry_of"),
    "limit_key",  # the key of the profile's per-key limits and pauses
    "cost",  # units of the profile's rate limit the call uses (default 1)
)
# Where it is now.
PROGRESS: Final = (
    "state",
    "attempts",
    "dispatch",  # the engine message that may run it (one native id per dispatch)
    "due_at",  # when a scheduled or retrying job may be sent
    "waiting",  # why a scheduled job waits: "limit", "paused", "retry_after"
    "waits",  # RetryAfter waits so far (they use no attempt)
    "token",  # the claim that owns the running attempt
    "lease_until",
    "worker",
)
TIMES: Final = ("created_at", "queued_at", "started_at", "finished_at")  # ms since the epoch
OUTCOME: Final = ("result", "error", "history")
# Written by the running attempt (taskrouter.flow): {"fraction", "message", "at"}, and
# {name: codec JSON} kept across attempts.
FLOW: Final = ("progress", "checkpoints", "spend")
# Workflow members only (backends/lua/wf_*.lua).
WORKFLOW: Final = (
    "wf_index",
    "wf_label",
    "wf_wait",  # dependencies not yet finished
    "wf_next",  # members that wait for this one (JSON list of ids)
    "wf_input",  # template of the first argument ("@id", "[@id,@id]")
    "wf_args",
    "wf_kwargs",
    "wf_gathers",
    "wf_counted",
    "wf_continued",
)
ALL: Final = IDENTITY + CALL + PROGRESS + TIMES + OUTCOME + FLOW + WORKFLOW

# A job is in one index per value of each of these, and in the index of all jobs.
INDEXED: Final = ("state", "profile", "backend", "task")
# What a listing reads of each record: the job JSON's fields, not the payload or history.
LISTED: Final = (
    "id",
    "task",
    "profile",
    "backend",
    "queue",
    "state",
    "attempts",
    "max_attempts",
    "created_at",
    "queued_at",
    "started_at",
    "finished_at",
    "workflow_id",
    "idempotency_key",
    "result",
    "error",
)
# What /metrics reads of each recently finished record.
TIMED: Final = (
    "state",
    "profile",
    "backend",
    "queue",
    "task",
    "queued_at",
    "started_at",
    "finished_at",
)
