"""Follow what happens to queued jobs outside taskrouter: jobs deleted, canceled or
requeued with the engines' own tools (rq-dashboard, Flower, ``celery purge``), and
engine messages lost at a Redis restart. Run by every janitor pass (``Duties``).

A queued record whose dispatch was queued a few janitor intervals ago, and that is not
waiting to be sent, is looked for in its engine, a bounded batch per pass, oldest first
(a cursor walks the queued index across passes):

- RQ (one script, reconcile.lua): its RQ job deleted -> canceled; the RQ job canceled or
  stopped -> canceled; the RQ job in no queue and run by no live RQ worker (left in a
  registry by a Redis restart, failed by RQ's own cleanup) -> sent again.
- Celery, on a Redis broker that is the job store's: no message of its dispatch in its
  queue's list (searched when the list holds at most RECONCILE_MAX_QUEUE messages) nor
  reserved by a worker in kombu's unacked hash within the same few intervals -> sent
  again. A purge cannot be told from a loss, and losing
  a job is worse: ``celery purge`` does not cancel jobs (``taskrouter`` cancel or a
  revoke does: celery_worker connects task_revoked). Longer queues and other brokers are
  left to requeue_stale (the visibility window).

A copy sent again runs once: the old message, if it turns up, is refused at claim.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from taskrouter.derive import engine_queues
from taskrouter.errors import TaskrouterError
from taskrouter.settings import RECONCILE_AFTER, RECONCILE_BATCH, RECONCILE_MAX_QUEUE

from .base import native_id, parse_native_id
from .celery_unacked import UNACKED, UNACKED_INDEX, task_id
from .errors import engine_errors

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("taskrouter.janitor")
CHUNK = 1000  # messages per LRANGE


def rq_keys(prefix: str) -> tuple[str, str, str, str]:
    """RQ 3.0's key namespaces under its key prefix, as reconcile.lua takes them: a job's
    hash, a queue's list, a job's execution registry, an execution's hash (each followed
    by the id or name; a unit test compares them with RQ's own)."""
    return (f"{prefix}:job:", f"{prefix}:queue:", f"{prefix}:executions:", f"{prefix}:execution:")


class Reconciler:
    """The walk's cursor of one process, and one pass of it."""

    def __init__(self, runtime: Runtime, *, batch: int = RECONCILE_BATCH) -> None:
        self.runtime = runtime
        self.batch = batch
        self.cursor = ""

    @property
    def older_ms(self) -> int:
        return int(RECONCILE_AFTER * self.runtime.settings.janitor_interval * 1000)

    def run(self) -> dict[str, int]:
        """One pass: {"canceled_outside": n, "sent_again": n}."""
        settings, store = self.runtime.settings, self.runtime.store
        self.cursor, canceled, again, celery = store.reconcile(
            self.older_ms,
            self.batch,
            self.cursor,
            rq_keys(settings.rq_key_prefix or "rq"),
            RECONCILE_MAX_QUEUE,
        )
        for job_id in canceled:
            log.warning("job %s: its RQ job was removed or canceled outside taskrouter", job_id)
        for job_id in again:
            log.warning("job %s: its RQ job is in no queue and not running; sent again", job_id)
        missing = self.missing_celery(celery)
        resent = store.requeue_missing(missing, self.older_ms)
        for job_id in resent:
            log.warning("job %s: its Celery message is gone from the broker; sent again", job_id)
        return {"canceled_outside": len(canceled), "sent_again": len(again) + len(resent)}

    def missing_celery(self, jobs: Iterable[tuple[str, int, str]]) -> list[tuple[str, int]]:
        """The (job id, dispatch) of ``jobs`` whose message is in neither their queue's
        list nor kombu's unacked hash; only where that can be read cheaply."""
        settings = self.runtime.settings
        if settings.broker_url != settings.redis_url:
            return []  # another broker (RabbitMQ): requeue_stale only
        # Only this policy's Celery queues: a queue it does not know may be another
        # deployment's, on another broker, sharing the job store.
        known = set(engine_queues(self.runtime.derived, "celery"))
        by_queue: dict[str, dict[str, tuple[str, int]]] = defaultdict(dict)
        for job_id, dispatch, queue in jobs:
            if queue in known:
                by_queue[queue][native_id(job_id, dispatch)] = (job_id, dispatch)
        if not by_queue:
            return []
        prefix, client = settings.celery_key_prefix or "", self.runtime.store.client
        since = (self.runtime.store.clock() - self.older_ms) / 1000
        with engine_errors("celery broker"):
            # Only messages reserved lately count as held: a worker claims what it
            # reserved at once (or after the few tasks ahead of it, with prefetch); one
            # reserved longer ago whose job is still queued was dropped by its worker
            # (a reconnect after a Redis restart) and kombu would restore it only after
            # the visibility window.
            tags = client.zrangebyscore(prefix + UNACKED_INDEX, since, "+inf")
            held = {task_id(e) for e in client.hmget(prefix + UNACKED, tags)} if tags else set()
            missing: list[tuple[str, int]] = []
            for queue, wanted in by_queue.items():
                key = prefix + queue
                if client.llen(key) > RECONCILE_MAX_QUEUE:
                    continue
                found = _present(client, key, set(wanted) - held)
                missing += [job for nid, job in wanted.items() if nid not in held | found]
        return missing


def _present(client: object, key: str, nids: set[str]) -> set[str]:
    """Which of ``nids`` have a message in the list ``key`` (the task id of its headers).

    Read from the head in chunks: kombu pushes at the head and pops at the tail, so a
    message only moves towards higher indices and none is skipped between two chunks.
    """
    found: set[str] = set()
    start = 0
    while nids - found:
        chunk = client.lrange(key, start, start + CHUNK - 1)  # type: ignore[attr-defined]
        if not chunk:
            break
        found.update(nid for nid in map(_header_id, chunk) if nid in nids)
        start += CHUNK
    return found


# The first "id" key of a kombu message is its headers' task id: the body before it is
# base64 (no quotes), and quotes inside header strings are escaped.
_ID = re.compile(r'"id":\s*"([^"\\]+)"')


def _header_id(message: str) -> str | None:
    match = _ID.search(message)
    if match:
        return match.group(1)
    try:  # not laid out as kombu writes it: read it properly
        headers = json.loads(message)["headers"]
    except (ValueError, TypeError, LookupError):
        return None
    nid = headers.get("id") if isinstance(headers, dict) else None
    return nid if isinstance(nid, str) else None


REVOKED = (
    "revoked outside taskrouter (a Celery revoke, e.g. from Flower or `celery control revoke`)"
)


def on_revoked(runtime: Runtime) -> Callable[..., None]:
    """A receiver of Celery's ``task_revoked`` (it fires in the worker's main process when
    a revoked message arrives or a revoked task is terminated): the job ends canceled if
    the revoked message is its current dispatch. taskrouter's own cancel revokes too, but
    its record is canceled by then, so nothing changes."""

    def revoked(sender: object = None, request: object = None, **_: object) -> None:
        nid = getattr(request, "id", None) or ""
        job_id, dispatch = parse_native_id(nid)
        if not job_id.isalnum():
            return
        try:
            status = runtime.store.cancel_outside(job_id, dispatch, REVOKED)
        except TaskrouterError as exc:
            log.warning("job %s was revoked; its record could not say so: %s", job_id, exc)
            return
        if status == "ok":
            log.warning("job %s: %s", job_id, REVOKED)

    return revoked
