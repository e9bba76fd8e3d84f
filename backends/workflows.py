"""Workflows on the router's side: creating one, counting its members as they finish,
reading, canceling, and catching up on members whose finish was never counted.

Every member is a job with its own record; the workflow record (``Keys.workflow``) holds
the kind, the member ids in order and the aggregate (``workflow_store.py`` reads and
writes both, through ``lua/wf_*.lua``). A member made runnable by another's end is sent
by the process that counted that end when it can reach the member's engine, else left
due for that engine's own workers (the ``dispatching`` set they pump).

Members counted by nobody (a worker died between finishing a job and counting it; a job
the janitor failed after its worker died; a member canceled on its own) are caught up by
``sweep()``, which every worker's janitor duties run, and by any reader of the workflow.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskrouter import codec
from taskrouter.derive import celery_queues
from taskrouter.errors import (
    BackendUnavailable,
    JobNotFound,
    JobStateConflict,
    PayloadError,
    PolicyError,
    PolicyProblem,
    TaskrouterError,
    WorkflowNotFound,
)
from taskrouter.job import JobSource
from taskrouter.registry import lookup
from taskrouter.settings import CANVAS_FALLBACK, CATCH_UP_AFTER, DISPATCH_GRACE, UNFINISHED_TTL
from taskrouter.states import FINISHED
from taskrouter.workflow import Node
from taskrouter.workflow_handle import Workflow
from taskrouter.workflow_plan import Plan, plan

from .store import new_job_id

if TYPE_CHECKING:
    from taskrouter.derive import ProfileSettings

    from .runtime import Runtime

log = logging.getLogger("taskrouter.workflows")

CANVAS_FALLBACK_MS = int(CANVAS_FALLBACK * 1000)
CATCH_UP_AFTER_MS = int(CATCH_UP_AFTER * 1000)
_ID_RE = re.compile(r"@(\d+)")
_WHERE = {"fork": "RQ", "io": "Celery's I/O lane", "prefork": "Celery"}


# -- creation ---------------------------------------------------------------------------


def enqueue(runtime: Runtime, node: Node) -> Workflow:
    """Write every member's record and the workflow's at once, start the members that
    wait for nothing (or send the whole Celery canvas), and return the handle."""
    steps = plan(node)
    mode = runtime.derived.policy.routing.workflows
    settings = [runtime.profile_settings(lookup(s.signature.task)) for s in steps.steps]
    if mode == "celery":
        _check_celery_queues(runtime, settings)
    workflow_id = new_job_id()
    ids = [new_job_id() for _ in steps.steps]
    members = _member_fields(steps, ids, settings, mode, workflow_id)
    now = runtime.store.clock()
    record = {
        "id": workflow_id,
        "kind": steps.kind,
        "mode": mode,
        "state": "queued",
        "created_at": now,
        "total": len(ids),
        "done": 0,
        "members": json.dumps(ids),
        "result_tpl": _with_ids(steps.result, ids),
        "keep_ms": max(ps.keep_results for ps in settings) * 1000,
    }
    for fields in members:
        fields["created_at"] = now
        if fields["state"] == "queued":
            fields["queued_at"] = now
    fallback = DISPATCH_GRACE * 1000 if mode == "per-step" else CANVAS_FALLBACK_MS
    args: list[Any] = [workflow_id, now, UNFINISHED_TTL * 1000, now + fallback]
    args += _flat(record)
    for fields in members:
        args += [fields["id"], *_flat(fields)]
    runtime.workflows.create(args)
    service = WorkflowService(runtime)
    try:
        if mode == "celery":
            runtime.canvas_backend().send_canvas(node, ids, settings)
        else:
            _send_entries(runtime, members, settings)
    except BackendUnavailable:
        runtime.workflows.delete(workflow_id, ids)
        raise
    strings = [{k: str(v) for k, v in f.items()} for f in members]
    return Workflow.from_records({k: str(v) for k, v in record.items()}, strings, service)


def _check_celery_queues(runtime: Runtime, settings: Sequence[ProfileSettings]) -> None:
    """In celery mode every member runs on Celery, on its profile's queue; a profile that
    routes to RQ has a queue no Celery worker consumes, where the member would wait
    forever. Refuse that up front, naming the fix."""
    served = set(celery_queues(runtime.derived))
    policy = runtime.derived.policy
    problems = [
        PolicyProblem(
            policy.path,
            policy.profiles[ps.profile].line,
            f"profiles.{ps.profile}",
            f"routes to {_WHERE[ps.lane]}, so no Celery prefork worker consumes its queue "
            f"{ps.queue!r}, but routing.workflows: celery runs every workflow member in "
            "Celery's prefork lane: give the profile a workflow shape (shape: chain, group "
            "or chord) or backend: celery, or set routing.workflows: per-step",
        )
        for ps in {s.profile: s for s in settings}.values()
        if ps.queue not in served
    ]
    if problems:
        raise PolicyError(problems)


def _flat(fields: Mapping[str, Any]) -> list[Any]:
    pairs = [x for k, v in fields.items() if v is not None for x in (k, v)]
    return [len(pairs), *pairs]


def _with_ids(template: str, ids: Sequence[str]) -> str:
    return _ID_RE.sub(lambda m: "@" + ids[int(m.group(1))], template)


def _member_fields(
    steps: Plan,
    ids: Sequence[str],
    settings: Sequence[ProfileSettings],
    mode: str,
    workflow_id: str,
) -> list[dict[str, Any]]:
    after = steps.dependents()
    members = []
    for step, job_id, ps in zip(steps.steps, ids, settings, strict=True):
        sig = step.signature
        waiting = [ids[i] for i in after[step.index]]
        try:
            payload = codec.encode_call(sig.args, sig.kwargs)
        except PayloadError as exc:
            raise PayloadError(f"{step.label} ({sig.task}): {exc}") from None
        fields: dict[str, Any] = {
            "id": job_id,
            "task": sig.task,
            "profile": ps.profile,
            # In celery mode the whole canvas runs on Celery; the profile still gives the
            # queue, the time limits and the retries.
            "backend": "celery" if mode == "celery" else ps.backend,
            "queue": ps.queue,
            "state": "scheduled" if step.deps else "queued",
            "attempts": 0,
            "max_attempts": ps.max_attempts,
            "dispatch": 1,
            "keep_ms": ps.keep_results * 1000,
            "delays": json.dumps(ps.retries.backoff) if ps.retries.backoff else None,
            "workflow_id": workflow_id,
            "wf_index": step.index,
            "wf_label": step.label,
            "wf_wait": len(step.deps),
            "wf_next": json.dumps(waiting) if waiting else None,
        }
        if step.deps:
            # The payload is written when the input is known (wf_done.lua): the input
            # first, then these arguments, exactly as Celery prepends a parent's result.
            call = json.loads(payload)
            fields["wf_input"] = _with_ids(step.input, ids)
            fields["wf_args"] = _compact(call["a"])[1:-1]
            fields["wf_kwargs"] = _compact(call["k"])
            fields["wf_gathers"] = "1" if step.gathers else None
        else:
            fields["payload"] = payload
        members.append(fields)
    return members


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _send_entries(
    runtime: Runtime, members: Sequence[Mapping[str, Any]], settings: Sequence[ProfileSettings]
) -> None:
    sent = 0
    for fields, ps in zip(members, settings, strict=True):
        if fields["state"] != "queued":
            continue
        try:
            runtime.send(fields["id"], 1, ps, redispatch=True)
        except BackendUnavailable:
            if not sent:
                raise  # nothing started: undo the whole workflow
            # Some members run already; the rest are due for their engines' senders.
            log.warning("workflow member %s left to its engine's workers", fields["id"])
        else:
            sent += 1


# -- members finishing ----------------------------------------------------------------------


def count_finished(runtime: Runtime, job_id: str) -> int:
    """Count a finished member (once, whoever asks) and send what it made runnable."""
    released = runtime.workflows.done(job_id, int(DISPATCH_GRACE * 1000), CANVAS_FALLBACK_MS)
    for member in released:
        runtime.send_released(*member)
    return len(released)


def sweep(runtime: Runtime, limit: int = 100) -> int:
    """Count members that finished without being counted, in up to ``limit`` running
    workflows; returns how many."""
    caught = 0
    for workflow_id in runtime.workflows.sample_active(limit):
        members = runtime.workflows.member_states(workflow_id)
        if members is None:  # its record expired unfinished
            runtime.workflows.forget_active(workflow_id)
            continue
        caught += _catch_up(runtime, members, older_than_ms=CATCH_UP_AFTER_MS)
    return caught


def _catch_up(runtime: Runtime, members: Sequence[Mapping[str, str]], older_than_ms: int) -> int:
    now = runtime.store.clock()
    caught = 0
    for m in members:
        if (
            m.get("state") in FINISHED
            and not m.get("wf_counted")
            and int(m.get("finished_at") or 0) <= now - older_than_ms
        ):
            count_finished(runtime, m["id"])
            caught += 1
    return caught


# -- reading and canceling --------------------------------------------------------------------


class WorkflowService:
    """The WorkflowSource of taskrouter.workflow_handle.Workflow, over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def jobs(self) -> JobSource:
        return self.runtime

    def read_workflow(
        self, workflow_id: str
    ) -> tuple[Mapping[str, str], Sequence[Mapping[str, str]]] | None:
        records = self.runtime.workflows.read(workflow_id)
        # A reader helps a workflow along whose member finished uncounted (its worker died
        # in between): counting is idempotent, so this never double-starts anything.
        if (
            records is not None
            and records[0].get("state") not in FINISHED
            and _catch_up(self.runtime, records[1], older_than_ms=CATCH_UP_AFTER_MS)
        ):
            records = self.runtime.workflows.read(workflow_id)
        return records

    def get(self, workflow_id: str) -> Workflow:
        records = self.read_workflow(workflow_id)
        if records is None:
            raise WorkflowNotFound(workflow_id)
        return Workflow.from_records(*records, self)

    def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel every member not yet finished; a running one is stopped by its engine."""
        runtime = self.runtime
        r = runtime.workflows.cancel(workflow_id)
        if r[0] == "missing":
            raise WorkflowNotFound(workflow_id)
        if r[0] == "finished":
            raise JobStateConflict(
                f"workflow {workflow_id} already finished ({r[1]}); nothing to cancel"
            )
        ids, mode = json.loads(r[1]), r[2]
        for member_id in ids:
            self._cancel_member(member_id, canvas=mode == "celery")
        for member_id in ids:
            count_finished(runtime, member_id)

    def _cancel_member(self, job_id: str, *, canvas: bool) -> None:
        runtime = self.runtime
        state, dispatch = runtime.store.fields(job_id, "state", "dispatch")
        try:
            runtime.cancel_job(job_id)
        except (JobNotFound, JobStateConflict):
            return  # finished meanwhile (or expired): nothing to stop
        if canvas and state == "running" and (dispatch or "1") != "1":
            # A canvas member keeps its first Celery task id through Celery's own retries,
            # while cancel_job revoked the id of its dispatch: stop it under its real id.
            try:
                runtime.backend("celery").stop(job_id, 1, running=True)
            except TaskrouterError as exc:
                log.warning("workflow member %s: celery revoke failed: %s", job_id, exc)


def get(runtime: Runtime, workflow_id: str) -> Workflow:
    """The workflow ``workflow_id``; WorkflowNotFound if it was never issued."""
    return WorkflowService(runtime).get(workflow_id)
