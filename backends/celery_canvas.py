"""Workflows as native Celery canvases (``routing.workflows: celery``).

The canvas is Celery's own chain, group and chord of the members' own tasks (each
registered under its name, celery_app.py), whose signatures carry only a member's job id
and ``canvas=True``: ids are fixed up front (they are the job
ids, given to Celery as task ids), so every member's record exists, queued or scheduled,
before the canvas is sent.

Signatures are immutable: Celery orders the steps and joins the chords, but a step's
input comes from the job records (``wf_done.lua`` splices the results into its payload
before Celery can send it), not from Celery's result passing. Celery would carry results
through kombu's JSON, turning tuples into lists and refusing datetimes; through the
records a step gets exactly the value the per-step mode gives it, by the codec.

A member retries with Celery's own ``retry(countdown=...)``, which keeps the canvas going
(the chain's remaining steps and the chord's callback travel in the retried message); the
policy's visibility window already accounts for the backoff of workflow-shaped profiles.
Its record says ``retrying`` meanwhile, and the router's schedule holds only a late
fallback (``CANVAS_FALLBACK_MS``) in case that message is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature as CelerySignature
from celery.exceptions import Ignore

from taskrouter.errors import MemberFailed
from taskrouter.workflow import Chain, Chord, Group, Node, Signature

from . import runner, workflows
from .hooks import context

if TYPE_CHECKING:
    from taskrouter.derive import ProfileSettings

log = logging.getLogger("taskrouter.celery")


def build(
    app: Celery, node: Node, members: Iterator[tuple[str, ProfileSettings]]
) -> CelerySignature:
    """The Celery canvas of ``node``; ``members`` yields (job id, settings) in plan order."""
    if isinstance(node, Signature):
        job_id, ps = next(members)
        return app.signature(
            node.task,
            kwargs={"job_id": job_id, "dispatch": 1, "canvas": True},
            immutable=True,
            task_id=job_id,
            queue=ps.queue,
            soft_time_limit=ps.soft_time_limit,
            time_limit=ps.time_limit,
        )
    if isinstance(node, Chain):
        return chain(*[build(app, step, members) for step in node.steps])
    if isinstance(node, Group):
        return group([build(app, m, members) for m in node.members])
    assert isinstance(node, Chord)
    header = group([build(app, m, members) for m in node.header])
    return chord(header, build(app, node.body, members))


def send(app: Celery, node: Node, ids: Sequence[str], settings: Sequence[ProfileSettings]) -> None:
    """Send the workflow ``node`` as one canvas; members in plan order have ``ids``."""
    build(app, node, iter(zip(ids, settings, strict=True))).apply_async()


def run_member(task: Any, job_id: str, dispatch: int) -> str:
    """One delivery of a canvas member: run it if it owns the job, then continue the canvas
    (return), fail it (raise MemberFailed), retry it (Celery's retry) or stop (Ignore)."""
    ctx = context()
    wf = ctx.runtime.workflows
    arrived = wf.arrive(job_id, dispatch)
    if arrived[0] == "waiting":
        # Its predecessors returned (Celery sent it) but one was never counted: its
        # worker died in between. Count them now; counting is idempotent.
        for dep in wf.dependencies(job_id):
            workflows.count_finished(ctx.runtime, dep)
        arrived = wf.arrive(job_id, dispatch)
    if arrived[0] not in ("ok", "finished"):
        log.warning("canvas member %s dispatch %s not run: %s", job_id, dispatch, arrived)
        raise Ignore()
    state = runner.run(job_id, dispatch, canvas=True, ctx=ctx).state
    if state in ("retrying", "limited", "scheduled"):
        # The next attempt (after a failure), or the start a limit, a pause or a
        # RetryAfter ("scheduled") deferred, comes back through Celery, so that the
        # canvas goes on after it.
        due, next_dispatch = ctx.runtime.store.next_attempt(
            job_id, limited=state != "retrying", fallback_ms=workflows.CANVAS_FALLBACK_MS
        )
        raise task.retry(
            countdown=max(0.0, (due - ctx.runtime.store.clock()) / 1000),
            kwargs={"job_id": job_id, "dispatch": next_dispatch, "canvas": True},
        )
    first, final, error = wf.may_continue(job_id)
    if not first:
        # A ghost copy, a delivery for a canceled member, or one whose canvas another
        # delivery already continued: sending the next step again must not happen.
        raise Ignore()
    if final == "failed":
        err = error or {}
        raise MemberFailed(f"{err.get('type', 'Error')}: {err.get('message', '')}")
    return job_id
