"""Celery: the app taskrouter builds from the policy, sending, stopping, and the worker."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kombu
import redis
from celery import Celery, signals
from kombu.exceptions import OperationalError
from kombu.transport import redis as kombu_redis

from taskrouter.derive import Derived, ProfileSettings
from taskrouter.errors import BackendUnavailable
from taskrouter.settings import Settings

from . import celery_canvas, celery_wire, execute
from .base import native_id, parse_native_id
from .store import JobStore, WorkerRegistry, redis_errors

log = logging.getLogger("taskrouter.celery")

EXECUTE = "taskrouter.execute"


def is_redis_url(url: str) -> bool:
    scheme = url.split("://", 1)[0]
    return scheme in ("redis", "rediss", "unix", "valkey", "valkeys", "redis+socket")


def celery_url(url: str) -> str:
    """kombu and Celery's result backend spell a unix socket ``redis+socket:///path``."""
    if not url.startswith("unix://"):
        return url
    parts = urlsplit(url)
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return f"redis+socket://{parts.path}?virtual_host={db}"


def make_app(settings: Settings, derived: Derived) -> Celery:
    """A Celery app whose every setting that matters comes from the policy.

    No pickle: only JSON is produced or accepted. Messages carry only (job_id, dispatch);
    the arguments stay in the job record.
    """
    app = Celery(
        "taskrouter",
        broker=celery_url(settings.broker_url),
        backend=celery_url(settings.redis_url),
        set_as_current=False,
    )
    transport: dict[str, Any] = {"visibility_timeout": derived.visibility_timeout}
    result_transport: dict[str, Any] = {}
    if settings.celery_key_prefix:
        transport["global_keyprefix"] = settings.celery_key_prefix
        result_transport["global_keyprefix"] = settings.celery_key_prefix
    keep = max((p.keep_results for p in derived.profiles.values()), default=86400)
    app.conf.update(
        accept_content=["json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        # Each delivery is claimed in the job record, so a redelivered message is harmless
        # and a message lost with a dead worker comes back: ack after the run.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=result_transport,
        result_expires=keep,
        task_ignore_result=True,
        task_track_started=False,
        task_default_queue="taskrouter-default",
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )

    @app.task(name=EXECUTE, ignore_result=True, shared=False)
    def run_job(job_id: str, dispatch: int) -> str:
        return execute.run(job_id, dispatch)

    celery_canvas.register(app)  # [workflows] the member task of native canvases
    return app


@contextmanager
def broker_errors() -> Iterator[None]:
    try:
        yield
    except (OperationalError, ConnectionError, OSError, redis.ConnectionError) as exc:
        raise BackendUnavailable("celery broker", str(exc) or type(exc).__name__) from exc


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


# kombu's Redis transport keeps each message a worker reserved in this hash (delivery tag
# -> [message, exchange, routing key]), indexed by delivery time (epoch seconds).
_UNACKED, _UNACKED_INDEX = kombu_redis.Channel.unacked_key, kombu_redis.Channel.unacked_index_key


def _execute_task_id(entry: str | None) -> str | None:
    """The task id of an unacked entry if it is a taskrouter.execute message."""
    if entry is None:  # acked since the index was read
        return None
    try:
        headers = json.loads(entry)[0]["headers"]
    except (ValueError, TypeError, LookupError):
        return None
    if not isinstance(headers, dict) or headers.get("task") != EXECUTE:
        return None
    nid = headers.get("id")
    return nid if isinstance(nid, str) else None


_TemplateKey = tuple[str, float | None, float | None]


def _template_key(settings: ProfileSettings) -> _TemplateKey:
    return settings.queue, settings.soft_time_limit, settings.time_limit


def _options(job_id: str, dispatch: int, settings: ProfileSettings) -> dict[str, Any]:
    """send_task's options for a dispatch."""
    return {
        "args": (job_id, dispatch),
        "task_id": native_id(job_id, dispatch),
        "queue": settings.queue,
        "soft_time_limit": settings.soft_time_limit,
        "time_limit": settings.time_limit,
        # Nothing reads Celery's results (the record has them; the task ignores them).
        # Without this, send_task SUBSCRIBEs to the task's result channel and the
        # dropped AsyncResult UNSUBSCRIBEs: two more round trips per enqueue.
        "ignore_result": True,
    }


def _publish_hooked() -> bool:
    """Whether something connected to Celery's publish signals (tracing integrations add
    headers there, or watch every message): then Celery builds every message itself."""
    return bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)


class CeleryBackend:
    name = "celery"

    def __init__(self, app: Celery, store: JobStore, queues: Sequence[str] = ()) -> None:
        self.app = app
        self.store = store
        self.queue_names = list(queues)
        # Whether the record write can share kombu's round trip (see _send_with_record):
        # None until the first enqueue finds out; then whether the create script is known
        # to be in the server's script cache.
        self._pipelined: bool | None = None
        self._script_loaded = False
        # A kombu-prefixed redis client per kombu channel, for the pipelines.
        self._channel_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        # Messages learned from Celery by (queue, soft limit, hard limit), celery_wire.py;
        # None where Celery's message could not be rebuilt.
        self._templates: dict[_TemplateKey, celery_wire.Template | None] = {}

    def send(
        self,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        *,
        create: Sequence[object] | None = None,
        redispatch: bool = False,
    ) -> None:
        sent = written = False
        message = self.filled(job_id, dispatch, settings)
        if message is not None:
            sent, written = self._send_filled(job_id, message, create, redispatch)
        elif create is not None and self._can_pipeline():
            sent, written = self._send_with_record(job_id, dispatch, settings, create)
        if sent:
            return
        if create is not None and not written:
            self.store.create(create)
        try:
            with broker_errors():
                self.app.send_task(EXECUTE, **_options(job_id, dispatch, settings))
        except BackendUnavailable:
            if create is not None:
                self.store.delete(job_id, str(create[3]))
            raise
        if redispatch:
            self.store.dispatched(job_id, self.name)

    def filled(
        self, job_id: str, dispatch: int, settings: ProfileSettings
    ) -> tuple[str, str] | None:
        """The queue key and the message of a dispatch, filled from the template learned
        for its queue and limits (celery_wire.py), ready to LPUSH with the record write
        on any client of the job store's Redis. None where Celery must build the message:
        another broker, nothing learned yet, or a receiver on the publish signals."""
        if not self._can_pipeline() or _publish_hooked():
            return None
        template = self._templates.get(_template_key(settings))
        if template is None:
            return None
        parent = None
        current = self.app.current_worker_task
        if current:  # sent from inside a Celery task: Celery names it in the message
            request = current.request
            parent = celery_wire.Parent(root_id=request.root_id or request.id, parent_id=request.id)
        message = template.fill(job_id, dispatch, reply_to=self.app.thread_oid, parent=parent)
        return template.key, message

    def _send_filled(
        self,
        job_id: str,
        message: tuple[str, str],
        create: Sequence[object] | None,
        redispatch: bool,
    ) -> tuple[bool, bool]:
        """Write the record (if ``create``) and push a filled message in ONE round trip,
        on the job store's own client. Returns (sent, maybe_written) as
        _send_with_record does."""
        pipe = self.store.client.pipeline(transaction=False)
        if create is not None:
            self._load_create()
            self.store.queue_create(pipe, create, cached=True)
        pipe.lpush(*message)
        if redispatch:
            pipe.zrem(self.store.keys.dispatching(self.name), job_id)
        return self._execute(pipe, job_id, create is not None)

    def _load_create(self) -> None:
        """Put the create script in the server's cache once (the pipelines send its SHA)."""
        if not self._script_loaded:
            self.store.load_create()
            self._script_loaded = True

    @property
    def _broker_is_store(self) -> bool:
        return bool(self.app.conf.broker_url == celery_url(self.store.url))

    @property
    def _kombu_prefix(self) -> str:
        """kombu's global key prefix on the broker ('' for none)."""
        return str(self.app.conf.broker_transport_options.get("global_keyprefix", ""))

    def _can_pipeline(self) -> bool:
        """Whether the record write can share the message's round trip: the broker is
        the job store's Redis (same URL) and kombu is the 5.7 that _send_with_record
        relies on (the project pins kombu <5.8; re-check on a bump)."""
        if self._pipelined is None:
            conf = self.app.conf
            self._pipelined = (
                self._broker_is_store
                and conf.broker_write_url in (None, conf.broker_url)
                and kombu.VERSION[:2] == (5, 7)
            )
        return self._pipelined

    def _send_with_record(
        self,
        job_id: str,
        dispatch: int,
        settings: ProfileSettings,
        create: Sequence[object],
    ) -> tuple[bool, bool]:
        """Write the record and send the message in ONE round trip.

        Separately they cost a round trip each, which alone kept taskrouter under 90% of
        raw Celery's enqueue rate. Here send_task runs as usual, except that kombu's
        Redis channel hands over the commands it would run (kombu 5.7's publish-batch
        protocol, see _Collect) and they go in one pipeline behind the record write, on
        one connection, so Redis runs the write first. The pipeline's client is kept per
        channel: kombu's own batch (and every unbatched publish) builds a redis client
        per message, which costs as much as the record write.

        Returns (sent, maybe_written). Not sent: nothing happened (the connection is not
        up yet: the usual path fails fast when Redis is down), or the round trip failed.
        A script-cache miss (NOSCRIPT) wrote no record while the message went out: a
        worker refuses it at claim (no record) and the caller writes and sends again. A
        broken connection leaves both unknown: the caller writes the record again only if
        it is missing (the counters would count it twice), and a message sent twice runs
        once (the second delivery is refused at claim).

        The message kombu handed over becomes the template of every later message to
        the same queue with the same limits (celery_wire.py), when it can be rebuilt.
        """
        self._load_create()
        options = _options(job_id, dispatch, settings)
        with self.app.producer_or_acquire() as producer:
            if not producer.connection.connected:
                return False, False
            channel = producer.channel
            if not isinstance(channel, kombu_redis.Channel):
                self._pipelined = False
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
                with broker_errors():  # nothing is written yet
                    self.app.send_task(EXECUTE, producer=producer, **options)
            finally:
                del producer._batch_local.current
            if not collect.used:  # kombu published by itself (not the kombu 5.7 we know)
                self._pipelined = False
                log.error("job %s: kombu bypassed the publish batch; pipelining is off", job_id)
                self.store.create(create)  # at once: the message is out already
                return True, True
            pipe = client.pipeline(transaction=False)
            self.store.queue_create(pipe, create, cached=True)
            for name, args in collect.commands:
                getattr(pipe, name)(*args)
            outcome = self._execute(pipe, job_id, True)
        key = _template_key(settings)
        if outcome[0] and key not in self._templates and not _publish_hooked():
            template = celery_wire.learn(collect.commands, self._kombu_prefix, job_id, dispatch)
            if template is None:
                log.warning("queue %s: Celery's message cannot be rebuilt here", settings.queue)
            self._templates[key] = template
        return outcome

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

    def held(self, before: float) -> list[tuple[str, int]]:
        """(job id, dispatch) of every taskrouter.execute message that Celery workers
        hold reserved, delivered at or before ``before`` (epoch seconds): the entries of
        kombu's unacked hash, on a Redis broker that is the job store's. Empty for any
        other broker (RabbitMQ gives a dead consumer's messages back by itself)."""
        if not self._broker_is_store:
            return []
        prefix, client = self._kombu_prefix, self.store.client
        held: list[tuple[str, int]] = []
        with redis_errors("celery broker"):
            tags = client.zrangebyscore(prefix + _UNACKED_INDEX, "-inf", before)
            for i in range(0, len(tags), 500):
                for entry in client.hmget(prefix + _UNACKED, tags[i : i + 500]):
                    nid = _execute_task_id(entry)
                    if nid:
                        held.append(parse_native_id(nid))
        return held

    def stop(self, job_id: str, dispatch: int, *, running: bool) -> None:
        # The record already says canceled, so any delivery is refused at claim time;
        # revoke only stops a running task sooner. A revoke is lost when no worker is
        # online, which is why the record, not the revoke, is what guarantees it.
        with broker_errors():
            self.app.control.revoke(
                native_id(job_id, dispatch), terminate=running, signal="SIGTERM"
            )

    def ping(self) -> None:
        with broker_errors(), self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def queue_depths(self) -> dict[str, int]:
        if self._broker_is_store:
            # kombu keeps a queue as a list under its global key prefix; a passive
            # declare through kombu does not apply that prefix.
            prefix = self._kombu_prefix
            with redis_errors("celery broker"):
                pipe = self.store.client.pipeline(transaction=False)
                for queue in self.queue_names:
                    pipe.llen(prefix + queue)
                return dict(zip(self.queue_names, pipe.execute(), strict=True))
        depths: dict[str, int] = {}
        with broker_errors(), self.app.connection_for_write() as conn, conn.channel() as chan:
            for queue in self.queue_names:
                try:
                    depths[queue] = chan.queue_declare(queue, passive=True).message_count
                except Exception:  # a queue nobody declared yet holds nothing
                    depths[queue] = 0
        return depths

    def workers_alive(self) -> int:
        return len(WorkerRegistry(self.store).alive("celery"))

    def close(self) -> None:
        self.app.close()
