"""Sending a Celery message and writing its job record in ONE Redis round trip.

Separately they cost a round trip each, which alone kept taskrouter under 90% of raw
Celery's enqueue rate. This depends on kombu internals, checked against kombu 5.7.0 and
Celery 5.7.0 (``usable`` refuses any other kombu minor version, and everything falls
back to plain ``send_task``):

- kombu 5.7's publish-batch protocol (``Producer._batch_local.current``): kombu's Redis
  channel then hands over the Redis commands of a message instead of running them;
- ``kombu.transport.redis.Channel`` and its ``_create_client``, for a key-prefixing
  client per channel.

The first message to each queue with each pair of time limits is built by Celery's
``send_task`` and becomes the template of every later one (``celery_wire.py``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

import kombu
import redis
from celery import Celery, signals
from kombu.transport import redis as kombu_redis

from taskrouter.derive import ProfileSettings

from . import celery_wire
from .base import Call
from .errors import engine_errors
from .store import JobStore

log = logging.getLogger("taskrouter.celery")

KOMBU_CHECKED = (5, 7)
_TemplateKey = tuple[str, float | None, float | None]


def template_key(settings: ProfileSettings) -> _TemplateKey:
    return settings.queue, settings.soft_time_limit, settings.time_limit


def publish_hooked() -> bool:
    """Whether something connected to Celery's publish signals (tracing integrations add
    headers there, or watch every message): then Celery builds every message itself."""
    return bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)


class _Collect:
    """Stands in, for one publish, for kombu 5.7's batch state on a producer
    (``Producer._batch_local.current``): kombu's Redis channel then hands over the Redis
    commands of the message (``add``: LPUSH, and PEXPIREs for an expiring queue) instead
    of running them, as it does for kombu's own ``Producer.batch()``."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []
        self.used = False

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        self.used = True
        return channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


class FastPath:
    """The one-round-trip sends of a CeleryBackend, where the broker is the job store's
    Redis; ``usable`` says whether it is."""

    def __init__(self, app: Celery, store: JobStore, engine: str) -> None:
        self.app = app
        self.store = store
        self.engine = engine
        self._usable: bool | None = None  # found out on first use
        self._script_loaded = False  # the create script is in the server's script cache
        # A kombu-prefixed redis client per kombu channel, for the pipelines.
        self._channel_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        # Messages learned by (queue, soft limit, hard limit); None where Celery's message
        # could not be rebuilt.
        self._templates: dict[_TemplateKey, celery_wire.Template | None] = {}

    @property
    def kombu_prefix(self) -> str:
        """kombu's global key prefix on the broker ('' for none)."""
        return str(self.app.conf.broker_transport_options.get("global_keyprefix", ""))

    @property
    def usable(self) -> bool:
        """The broker is the job store's Redis (same URL), and kombu is the one this
        module was checked against."""
        if self._usable is None:
            from .celery_app import celery_url

            conf = self.app.conf
            self._usable = (
                conf.broker_url == celery_url(self.store.url)
                and conf.broker_write_url in (None, conf.broker_url)
                and kombu.VERSION[:2] == KOMBU_CHECKED
            )
        return self._usable

    def filled(
        self, job_id: str, dispatch: int, settings: ProfileSettings, call: Call
    ) -> tuple[str, str] | None:
        """The queue key and the message of a dispatch, filled from the template learned
        for its queue and limits, ready to LPUSH with the record write on any client of
        the job store's Redis. None where Celery must build the message: another broker,
        nothing learned yet, or a receiver on the publish signals."""
        if not self.usable or publish_hooked():
            return None
        template = self._templates.get(template_key(settings))
        if template is None:
            return None
        parent = None
        current = self.app.current_worker_task
        if current:  # sent from inside a Celery task: Celery names it in the message
            request = current.request
            parent = celery_wire.Parent(root_id=request.root_id or request.id, parent_id=request.id)
        message = template.fill(
            job_id,
            dispatch,
            task=call.task,
            shown=(call.args, call.kwargs),
            reply_to=self.app.thread_oid,
            parent=parent,
        )
        return template.key, message

    def send_filled(
        self,
        job_id: str,
        message: tuple[str, str],
        create: Sequence[object] | None,
        redispatch: bool,
    ) -> tuple[bool, bool]:
        """Write the record (if ``create``) and push a filled message in one round trip,
        on the job store's own client. Returns (sent, maybe_written) as send_with_record."""
        pipe = self.store.client.pipeline(transaction=False)
        if create is not None:
            self._load_create()
            self.store.queue_create(pipe, create, cached=True)
        pipe.lpush(*message)
        if redispatch:
            self.store.dispatched(job_id, self.engine, pipe)
        return self._execute(pipe, job_id, create is not None)

    def send_with_record(
        self,
        job_id: str,
        dispatch: int,
        call: Call,
        options: dict[str, Any],
        create: Sequence[object],
    ) -> tuple[bool, bool]:
        """Write the record and send the message ``send_task`` builds, in one round trip.

        send_task runs as usual, except that kombu's Redis channel hands over the commands
        it would run (see _Collect) and they go in one pipeline behind the record write,
        on one connection, so Redis runs the write first. The pipeline's client is kept
        per channel: kombu's own batch (and every unbatched publish) builds a redis client
        per message, which costs as much as the record write.

        Returns (sent, maybe_written). Not sent: nothing happened (the connection is not
        up yet: the usual path fails fast when Redis is down), or the round trip failed.
        A script-cache miss (NOSCRIPT) wrote no record while the message went out: a
        worker refuses it at claim (no record) and the caller writes and sends again. A
        broken connection leaves both unknown: the caller writes the record again only if
        it is missing (the counters would count it twice), and a message sent twice runs
        once (the second delivery is refused at claim).

        The message kombu handed over becomes the template of every later message to the
        same queue with the same limits, when it can be rebuilt.
        """
        self._load_create()
        with self.app.producer_or_acquire() as producer:
            if not producer.connection.connected:
                return False, False
            channel = producer.channel
            if not isinstance(channel, kombu_redis.Channel):
                self._usable = False
                return False, False
            client = self._channel_clients.get(channel)
            if client is None:
                client = self._channel_clients[channel] = channel._create_client()
            queue = self.app.amqp.queues.get(options["queue"])  # send_task adds a new one
            if queue is not None and hash(queue) in producer.connection.declared_entities:
                # kombu's own cache check, without its per-call copy-and-bind of the queue
                # (it would find the queue declared on this connection and do nothing).
                options = {**options, "declare": []}
            collect = _Collect()
            producer._batch_local.current = collect
            try:
                with engine_errors("celery broker"):  # nothing is written yet
                    self.app.send_task(call.task, producer=producer, **options)
            finally:
                del producer._batch_local.current
            if not collect.used:  # kombu published by itself (not the kombu 5.7 we know)
                self._usable = False
                log.error("job %s: kombu bypassed the publish batch; pipelining is off", job_id)
                self.store.create(create)  # at once: the message is out already
                return True, True
            pipe = client.pipeline(transaction=False)
            self.store.queue_create(pipe, create, cached=True)
            for name, args in collect.commands:
                getattr(pipe, name)(*args)
            outcome = self._execute(pipe, job_id, True)
        self._learn(collect, job_id, dispatch, call, options, outcome[0])
        return outcome

    def _learn(
        self,
        collect: _Collect,
        job_id: str,
        dispatch: int,
        call: Call,
        options: dict[str, Any],
        sent: bool,
    ) -> None:
        key = (options["queue"], options["soft_time_limit"], options["time_limit"])
        if not sent or key in self._templates or publish_hooked():
            return
        shown = (call.args, call.kwargs)
        template = celery_wire.learn(
            collect.commands, self.kombu_prefix, job_id, dispatch, call.task, shown
        )
        if template is None:
            log.warning("queue %s: Celery's message cannot be rebuilt here", options["queue"])
        self._templates[key] = template

    def _load_create(self) -> None:
        """Put the create script in the server's cache once (the pipelines send its SHA)."""
        if not self._script_loaded:
            self.store.load_create()
            self._script_loaded = True

    def _execute(self, pipe: Any, job_id: str, with_record: bool) -> tuple[bool, bool]:
        """Run a send pipeline (the record write first, if ``with_record``); returns
        (sent, maybe_written)."""
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            return False, with_record and self.store.exists(job_id)
        if not with_record:
            self.store.raise_failed(results)
        elif not self.store.created(results):
            self._script_loaded = False
            log.warning("job %s: Redis lost its script cache; writing and sending again", job_id)
            return False, False
        return True, True
