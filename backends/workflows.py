"""Workflows on the router's side: creating one, counting its members as they finish,
reading, canceling, and catching up on members whose finish was never counted.

Every member is a job with its own record; the workflow record (``Keys.workflow``) holds
the kind, the member ids in order and the aggregate. The state machine is in
``lua/wf_*.lua``:

- ``wf_create``: all member records and the workflow record at once. Members that wait
  for nothing are ``queued`` (and in the dispatching set until sent); the others are
  ``scheduled``, waiting for a dependency, with no engine message anywhere.
- ``wf_done``: a member finished. It is counted once; when it was a dependent's last
  dependency, the dependent gets its input (results spliced into its payload) and, in
  per-step mode, is flipped to ``queued`` and put in the dispatching set in the same
  script, then sent by the caller. A crash between the flip and the send leaves it to the
  janitor's pump, exactly as a due retry. A member that failed or was canceled ends every
  member waiting for it (see ``wf_done.lua``), and the last member ends the workflow.
- ``wf_arrive`` / ``wf_continue``: the two checks of a native Celery canvas member
  (``celery_canvas.py``).

Members counted by nobody (a worker died between finishing a job and counting it; a job
the janitor failed after its worker died; a member canceled on its own) are caught up by
``sweep()``, which the janitor runs, and by any reader of the workflow.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
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
)
from taskrouter.job import JobSource
from taskrouter.registry import lookup
from taskrouter.settings import DISPATCH_GRACE, UNFINISHED_TTL
from taskrouter.states import FINISHED
from taskrouter.workflow import Node, Plan, Workflow, WorkflowNotFound, plan

from .scripts import SCRIPTS
from .store import JobStore, new_job_id, now_ms, redis_errors

if TYPE_CHECKING:
    from taskrouter.derive import ProfileSettings

    from .runtime import Runtime

log = logging.getLogger("taskrouter.workflows")

# A step of a native Celery canvas whose Celery message has not come this long after it
# could run (its predecessors finished, or its retry countdown passed) is presumed lost
# with a worker that died mid-canvas: the router's schedule then sends it itself. Long
# enough that a busy queue rarely triggers it; a copy sent early is harmless anyway
# (claim.lua runs one of them), it only costs the canvas's own continuation.
CANVAS_FALLBACK_MS = 120_000
# A finished member that nobody counted this long after it finished is caught up by a
# reader; the worker that ran it normally counts it within milliseconds.
CATCH_UP_AFTER_MS = 2_000

_ID_RE = re.compile(r"@(\d+)")


_scripts: dict[str, Any] = {}  # redis-py Script objects, made once per process


def _run(store: JobStore, name: str, *args: Any) -> Any:
    client = store.client
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = client.register_script(SCRIPTS[name])
    with redis_errors():
        # EVALSHA, loading the script on a NOSCRIPT reply (a restarted Redis).
        return script(args=[store.keys.prefix, *args], client=client)


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
    now = now_ms()
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
    _run(runtime.store, "wf_create", *args)
    service = WorkflowService(runtime)
    try:
        if mode == "celery":
            from . import celery_canvas

            celery_canvas.send(runtime, node, ids, settings)
        else:
            _send_entries(runtime, members, settings)
    except BackendUnavailable:
        service.delete(workflow_id, ids)
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
            f"routes to RQ, so no Celery worker consumes its queue {ps.queue!r}, but "
            "routing.workflows: celery runs every workflow member on Celery: give the "
            "profile a workflow shape (shape: chain, group or chord) or backend: celery, "
            "or set routing.workflows: per-step",
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
            runtime.backends[ps.backend].send(fields["id"], 1, ps, redispatch=True)
        except BackendUnavailable:
            if not sent:
                raise  # nothing started: undo the whole workflow
            # Some members run already; the rest are in the dispatching set.
            log.warning("workflow member %s left to the janitor's pump", fields["id"])
        else:
            sent += 1


# -- members finishing ----------------------------------------------------------------------


def on_member_finished(
    store: JobStore, job_id: str, workflow_id: str, state: str, value: str
) -> None:
    """A member job of ``workflow_id`` ended in ``state`` (result or error JSON in value).

    Called by the worker that ran it (backends/execute.py), after its record says so.
    """
    from taskrouter._runtime import current

    count_finished(current(), job_id)


def count_finished(runtime: Runtime, job_id: str) -> int:
    """Count a finished member (once, whoever asks) and send what it made runnable."""
    flat = _run(
        runtime.store, "wf_done", job_id, now_ms(), DISPATCH_GRACE * 1000, CANVAS_FALLBACK_MS
    )
    released = [tuple(flat[i : i + 5]) for i in range(0, len(flat), 5)]
    for member_id, backend, queue, dispatch, profile in released:
        _send_released(runtime, member_id, backend, queue, int(dispatch), profile)
    return len(released)


def _send_released(
    runtime: Runtime, job_id: str, backend: str, queue: str, dispatch: int, profile: str
) -> None:
    ps = runtime.derived.profiles.get(profile)
    if ps is None or backend not in runtime.backends:
        # Still in the dispatching set: a process whose policy knows it sends it.
        log.error("workflow member %s: profile %r unknown to this policy", job_id, profile)
        return
    if ps.queue != queue:
        ps = replace(ps, queue=queue)
    try:
        runtime.backends[backend].send(job_id, dispatch, ps, redispatch=True)
    except BackendUnavailable as exc:
        log.warning("workflow member %s left to the janitor's pump: %s", job_id, exc)


def sweep(runtime: Runtime, limit: int = 100) -> int:
    """Count members that finished without being counted, in up to ``limit`` running
    workflows; returns how many. The janitor runs this every pass."""
    store = runtime.store
    with redis_errors():
        # A random sample each pass: every running workflow is looked at sooner or later,
        # however many there are, with no cursor to share between janitors.
        sample = store.client.zrandmember(store.keys.active_workflows, limit) or []
    caught = 0
    for workflow_id in sample:
        members = _member_states(store, workflow_id)
        if members is None:  # its record expired unfinished
            with redis_errors():
                store.client.zrem(store.keys.active_workflows, workflow_id)
            continue
        caught += _catch_up(runtime, members, older_than_ms=CATCH_UP_AFTER_MS)
    return caught


def _member_states(store: JobStore, workflow_id: str) -> list[dict[str, str]] | None:
    with redis_errors():
        raw = store.client.hget(store.keys.workflow(workflow_id), "members")
        if raw is None:
            return None
        ids = json.loads(raw)
        pipe = store.client.pipeline(transaction=False)
        for member_id in ids:
            pipe.hmget(store.keys.job(member_id), "state", "wf_counted", "finished_at")
        rows = pipe.execute()
    fields = ("state", "wf_counted", "finished_at")
    return [
        {"id": i, **{f: v or "" for f, v in zip(fields, row, strict=True)}}
        for i, row in zip(ids, rows, strict=True)
    ]


def _catch_up(runtime: Runtime, members: Sequence[Mapping[str, str]], older_than_ms: int) -> int:
    now = now_ms()
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
    """The WorkflowSource of router.workflow.Workflow, over one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def jobs(self) -> JobSource:
        return self.runtime

    def read_raw(self, workflow_id: str) -> tuple[dict[str, str], list[dict[str, str]]] | None:
        store = self.runtime.store
        with redis_errors():
            record = store.client.hgetall(store.keys.workflow(workflow_id))
            if not record:
                return None
            ids = json.loads(record.get("members") or "[]")
            pipe = store.client.pipeline(transaction=False)
            for member_id in ids:
                pipe.hgetall(store.keys.job(member_id))
            found = pipe.execute()
        # A member whose record expired reads as an empty state, not as a missing member.
        gone = {"state": "", "workflow_id": workflow_id}
        return record, [m or {"id": i, **gone} for i, m in zip(ids, found, strict=True)]

    def read_workflow(
        self, workflow_id: str
    ) -> tuple[Mapping[str, str], Sequence[Mapping[str, str]]] | None:
        records = self.read_raw(workflow_id)
        # A reader helps a workflow along whose member finished uncounted (its worker died
        # in between): counting is idempotent, so this never double-starts anything.
        if (
            records is not None
            and records[0].get("state") not in FINISHED
            and _catch_up(self.runtime, records[1], older_than_ms=CATCH_UP_AFTER_MS)
        ):
            records = self.read_raw(workflow_id)
        return records

    def get(self, workflow_id: str) -> Workflow:
        records = self.read_workflow(workflow_id)
        if records is None:
            raise WorkflowNotFound(workflow_id)
        return Workflow.from_records(*records, self)

    def cancel_workflow(self, workflow_id: str) -> None:
        """Cancel every member not yet finished; a running one is stopped by its engine."""
        runtime = self.runtime
        r = _run(runtime.store, "wf_cancel", workflow_id, now_ms())
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
        before = runtime.store.read(job_id) or {}
        try:
            runtime.cancel_job(job_id)
        except (JobNotFound, JobStateConflict):
            return  # finished meanwhile (or expired): nothing to stop
        if canvas and before.get("state") == "running" and before.get("dispatch", "1") != "1":
            # A canvas member keeps its first Celery task id through Celery's own retries,
            # while cancel_job revoked the id of its dispatch: stop it under its real id.
            try:
                runtime.celery.stop(job_id, 1, running=True)
            except TaskrouterError as exc:
                log.warning("workflow member %s: celery revoke failed: %s", job_id, exc)

    def delete(self, workflow_id: str, ids: Sequence[str]) -> None:
        """Undo a workflow whose start failed before anything ran."""
        store = self.runtime.store
        for member_id in ids:
            store.delete(member_id)
        with redis_errors():
            store.client.delete(store.keys.workflow(workflow_id))
            store.client.zrem(store.keys.active_workflows, workflow_id)


def get(runtime: Runtime, workflow_id: str) -> Workflow:
    """The workflow ``workflow_id``; WorkflowNotFound if it was never issued."""
    return WorkflowService(runtime).get(workflow_id)


# -- the two checks of a native Celery canvas member (celery_canvas.py) ------------------------


def arrive(store: JobStore, job_id: str, dispatch: int) -> tuple[str, ...]:
    """Make a canvas member's delivered dispatch claimable (see wf_arrive.lua)."""
    return tuple(_run(store, "wf_arrive", job_id, dispatch, now_ms()))


def may_continue(store: JobStore, job_id: str) -> tuple[bool, str, dict[str, Any] | None]:
    """(first to continue the canvas, member state, error) (see wf_continue.lua)."""
    r = _run(store, "wf_continue", job_id)
    error = json.loads(r[2]) if len(r) > 2 and r[2] else None
    return bool(int(r[0])), str(r[1]), error


def dependencies(store: JobStore, job_id: str) -> list[str]:
    """The members whose results a member waits for."""
    with redis_errors():
        template = store.client.hget(store.keys.job(job_id), "wf_input") or ""
    return re.findall(r"@(\w+)", template)
