"""Workflows as native Celery canvases (``routing.workflows: celery``).

The canvas is Celery's own chain, group and chord of one task, ``taskrouter.member``,
whose signatures carry only a member's job id: ids are fixed up front (they are the job
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

from taskrouter.workflow import Chain, Chord, Group, Node, Signature

from . import execute, workflows
from .store import JobStore, now_ms, redis_errors

if TYPE_CHECKING:
    from taskrouter.derive import ProfileSettings

    from .runtime import Runtime

log = logging.getLogger("taskrouter.celery")

MEMBER = "taskrouter.member"


class MemberFailed(Exception):
    """Raised in a canvas member whose job failed, so that Celery stops the chain or fails
    the chord; the job record holds the real error."""


def register(app: Celery) -> None:
    """Register the canvas member task on ``app`` (called by make_app)."""

    # shared=False: this app's task only; a shared task would be added to every Celery app
    # built later in the process (tests and the API build several).
    @app.task(
        name=MEMBER,
        bind=True,
        shared=False,
        ignore_result=False,  # a chord counts its header through the result backend
        max_retries=None,  # the job record counts attempts, not Celery
        acks_late=True,
    )
    def run_member(self: Any, job_id: str, dispatch: int = 1) -> str:
        return run(self, job_id, dispatch)


def send(
    runtime: Runtime, node: Node, ids: Sequence[str], settings: Sequence[ProfileSettings]
) -> None:
    """Send the workflow ``node`` as one canvas; members in plan order have ``ids``."""
    from .celery_backend import broker_errors

    canvas = build(runtime.celery_app, node, iter(zip(ids, settings, strict=True)))
    with broker_errors():
        canvas.apply_async()


def build(
    app: Celery, node: Node, members: Iterator[tuple[str, ProfileSettings]]
) -> CelerySignature:
    """The Celery canvas of ``node``; ``members`` yields (job id, settings) in plan order."""
    if isinstance(node, Signature):
        job_id, ps = next(members)
        return app.signature(
            MEMBER,
            kwargs={"job_id": job_id, "dispatch": 1},
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


def run(task: Any, job_id: str, dispatch: int) -> str:
    """One delivery of a canvas member: run it if it owns the job, then continue the canvas
    (return), fail it (raise MemberFailed), retry it (Celery's retry) or stop (Ignore)."""
    store = execute.context().store
    arrived = workflows.arrive(store, job_id, dispatch)
    if arrived[0] == "waiting":
        # Its predecessors returned (Celery sent it) but one was never counted: its
        # worker died in between. Count them now; counting is idempotent.
        from taskrouter._runtime import current

        for dep in workflows.dependencies(store, job_id):
            workflows.count_finished(current(), dep)
        arrived = workflows.arrive(store, job_id, dispatch)
    if arrived[0] not in ("ok", "finished"):
        log.warning("canvas member %s dispatch %s not run: %s", job_id, dispatch, arrived)
        raise Ignore()
    state = execute.run(job_id, dispatch, canvas=True)
    if state in ("retrying", "limited"):
        # The next attempt (after a failure), or the start a global limit deferred, comes
        # back through Celery, so that the canvas goes on after it.
        due, next_dispatch = _next_attempt(store, job_id, limited=state == "limited")
        raise task.retry(
            countdown=max(0.0, (due - now_ms()) / 1000),
            kwargs={"job_id": job_id, "dispatch": next_dispatch},
        )
    first, final, error = workflows.may_continue(store, job_id)
    if not first:
        # A ghost copy, a delivery for a canceled member, or one whose canvas another
        # delivery already continued: sending the next step again must not happen.
        raise Ignore()
    if final == "failed":
        err = error or {}
        raise MemberFailed(f"{err.get('type', 'Error')}: {err.get('message', '')}")
    return job_id


def _next_attempt(store: JobStore, job_id: str, *, limited: bool) -> tuple[int, int]:
    """(when the next attempt may start, ms; its dispatch number). After a retry that the
    janitor scheduled (a lapsed lease, not this run), the pump may send a copy too: the
    claim runs one of them."""
    client, key = store.client, store.keys.job(job_id)
    with redis_errors():
        due, dispatch = client.hmget(key, "due_at", "dispatch")
        due = int(due or 0)
        if limited:
            # claim.lua put it on the router's schedule for when the limit allows; that
            # becomes the late fallback, as for a retry (XX: unless already taken off).
            client.zadd(store.keys.schedule, {job_id: due + workflows.CANVAS_FALLBACK_MS}, xx=True)
        else:
            due -= workflows.CANVAS_FALLBACK_MS  # execute.run added the fallback
    return due, int(dispatch or 1)
