"""Workflow records in Redis, beside the job records of their members.

The state machine is in ``lua/wf_*.lua``, run on the job store's client:

- ``wf_create``: all member records and the workflow record at once. Members that wait
  for nothing are ``queued`` (and due for their engine's senders until sent); the others
  are ``scheduled``, waiting for a dependency, with no engine message anywhere.
- ``wf_done``: a member finished. It is counted once; when it was a dependent's last
  dependency, the dependent gets its input (results spliced into its payload) and, in
  per-step mode, is flipped to ``queued`` and made due for its engine's senders in the
  same script. A member that failed or was canceled ends every member waiting for it,
  and the last member ends the workflow.
- ``wf_arrive`` / ``wf_continue``: the two checks of a native Celery canvas member.
- ``wf_cancel``: marks a workflow as being canceled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, cast

from taskrouter.states import ArriveStatus

from .errors import engine_errors
from .store import JobStore, Released

_DEPENDENCY = re.compile(r"@(\w+)")
MEMBER_FIELDS = ("state", "wf_counted", "finished_at")


class WorkflowStore:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.keys = store.keys

    def create(self, args: Sequence[Any]) -> None:
        self.store.run("wf_create", *args)

    def done(self, job_id: str, grace_ms: int, fallback_ms: int) -> list[Released]:
        """Count a finished member (once, whoever asks); the per-step members it made
        runnable, to send now."""
        flat = self.store.run("wf_done", job_id, self.store.clock(), grace_ms, fallback_ms)
        return [cast(Released, tuple(flat[i : i + 5])) for i in range(0, len(flat), 5)]

    def arrive(self, job_id: str, dispatch: int) -> tuple[ArriveStatus, str]:
        """Make a canvas member's delivered dispatch claimable (see wf_arrive.lua)."""
        r = self.store.run("wf_arrive", job_id, dispatch, self.store.clock())
        return cast(ArriveStatus, r[0]), r[1] if len(r) > 1 else ""

    def may_continue(self, job_id: str) -> tuple[bool, str, dict[str, Any] | None]:
        """(first to continue the canvas, member state, error) (see wf_continue.lua)."""
        r = self.store.run("wf_continue", job_id)
        error = json.loads(r[2]) if len(r) > 2 and r[2] else None
        return bool(int(r[0])), str(r[1]), error

    def cancel(self, workflow_id: str) -> list[str]:
        """['ok', members JSON, mode] / ['missing'] / ['finished', state]."""
        return list(self.store.run("wf_cancel", workflow_id, self.store.clock()))

    def read(self, workflow_id: str) -> tuple[dict[str, str], list[dict[str, str]]] | None:
        """The workflow record and every member's, in order; None if unknown."""
        client = self.store.client
        with engine_errors():
            record = client.hgetall(self.keys.workflow(workflow_id))
            if not record:
                return None
            ids = json.loads(record.get("members") or "[]")
            pipe = client.pipeline(transaction=False)
            for member_id in ids:
                pipe.hgetall(self.keys.job(member_id))
            found = pipe.execute()
        # A member whose record expired reads as an empty state, not as a missing member.
        gone = {"state": "", "workflow_id": workflow_id}
        return record, [m or {"id": i, **gone} for i, m in zip(ids, found, strict=True)]

    def member_states(self, workflow_id: str) -> list[dict[str, str]] | None:
        """Each member's id, state, whether it was counted and when it finished."""
        client = self.store.client
        with engine_errors():
            raw = client.hget(self.keys.workflow(workflow_id), "members")
            if raw is None:
                return None
            ids = json.loads(raw)
            pipe = client.pipeline(transaction=False)
            for member_id in ids:
                pipe.hmget(self.keys.job(member_id), *MEMBER_FIELDS)
            rows = pipe.execute()
        return [
            {"id": i, **{f: v or "" for f, v in zip(MEMBER_FIELDS, row, strict=True)}}
            for i, row in zip(ids, rows, strict=True)
        ]

    def sample_active(self, limit: int) -> list[str]:
        """Up to ``limit`` unfinished workflows, at random: every one is looked at sooner or
        later, however many there are, with no cursor to share between janitors."""
        with engine_errors():
            return list(self.store.client.zrandmember(self.keys.active_workflows, limit) or [])

    def forget_active(self, workflow_id: str) -> None:
        with engine_errors():
            self.store.client.zrem(self.keys.active_workflows, workflow_id)

    def delete(self, workflow_id: str, ids: Sequence[str]) -> None:
        """Undo a workflow whose start failed before anything ran."""
        for member_id in ids:
            self.store.delete(member_id)
        with engine_errors():
            self.store.client.delete(self.keys.workflow(workflow_id))
            self.store.client.zrem(self.keys.active_workflows, workflow_id)

    def dependencies(self, job_id: str) -> list[str]:
        """The members whose results a member waits for."""
        template = self.store.fields(job_id, "wf_input")[0] or ""
        return _DEPENDENCY.findall(template)
