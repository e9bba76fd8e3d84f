"""Server faults: Redis restarted under queued jobs, Redis down at enqueue, and Celery
on a RabbitMQ broker. Each test runs its own servers and workers."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskrouter import BackendUnavailable, _runtime
from taskrouter.services.processes import RedisServer
from tests.conftest import STACK_PREFIX
from tests.integration import app
from tests.integration.conftest import POLICY, Stack, poll

pytestmark = pytest.mark.integration
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def aof_redis(directory: Path) -> RedisServer:
    """A Redis of the test's own, on its own port, with every write in the AOF."""
    return RedisServer(directory, "--appendonly", "yes", "--appendfsync", "always", "--save", "")


@contextlib.contextmanager
def stack_on(redis_url: str, tmp_path: Path, **env: str) -> Iterator[Stack]:
    """Workers of both engines and an installed runtime on another server."""
    from taskrouter.backends.runtime import Runtime
    from taskrouter.settings import Settings

    s = Stack(redis_url, STACK_PREFIX, tmp_path)
    s.env.update(env)
    s.runtime = Runtime.from_env(Settings.from_env(s.env))
    previous = _runtime.install(s.runtime)
    try:
        yield s
    finally:
        s.stop()
        _runtime.install(previous)
        s.runtime.close()


def test_queued_jobs_survive_a_redis_restart_and_workers_reconnect(tmp_path):
    server = aof_redis(tmp_path)
    server.start()
    try:
        with stack_on(server.url, tmp_path) as s:
            s.start_worker("celery")
            s.start_worker("rq", concurrency=1)
            s.wait_ready()
            # More RQ work than one worker clears before the restart: some stays queued.
            jobs = [app.sleep_rq.enqueue(0.3) for _ in range(8)]
            # Celery jobs on a queue no worker consumes yet, so that they are in Redis's
            # queue, not reserved by a worker, at the restart. (A message that a worker
            # holds at that moment waits out kombu's visibility window: README, known
            # limits.)
            jobs += [
                app.slow_once_celery.enqueue(str(tmp_path / f"m{i}"), 0, "runs") for i in range(8)
            ]
            poll(
                lambda: any(j.refresh().state == "running" for j in jobs[:8]),
                30,
                "the first RQ job to start",
            )
            server.stop()
            server.start()
            s.start_worker("celery", tag="-fault", queues=["fault-celery"])
            jobs += [app.echo.enqueue(i) for i in range(8)]  # the first Celery worker's
            for job in jobs:
                job.wait(90)
            assert all(j.state == "succeeded" for j in jobs)
            assert [j.refresh().attempts for j in jobs] == [1] * len(jobs)
            assert all(p.poll() is None for p in s.procs.values())  # reconnected, not dead
    finally:
        server.stop()


@pytest.mark.parametrize("learned", [False, True], ids=["first-message", "learned-message"])
def test_redis_down_at_enqueue_raises_and_writes_nothing(tmp_path, learned):
    server = aof_redis(tmp_path)
    server.start()
    try:
        with stack_on(server.url, tmp_path) as s:
            store = s.runtime.store
            if learned:  # later Celery messages are filled in (backends/celery_wire.py)
                for _ in range(2):  # the first waits for kombu's connection; the second teaches
                    app.echo.enqueue("teach")
                assert any(s.runtime.celery._templates.values())
            before = store.client.zcard(store.keys.index())
            server.stop()
            for fn in (app.echo, app.long_echo):
                with pytest.raises(BackendUnavailable) as err:
                    fn.enqueue("x")
                assert "redis" in str(err.value)
            server.start()
            assert store.client.zcard(store.keys.index()) == before
    finally:
        server.stop()


def _amqp_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def test_celery_on_a_rabbitmq_broker_end_to_end(redis_url, tmp_path):
    if not _amqp_up():
        message = "no RabbitMQ on 127.0.0.1:5672 (start one: see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    queue = f"trt-amqp-{uuid.uuid4().hex[:8]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.read_text().replace("queue: amqp\n", f"queue: {queue}\n"))
    with stack_on(
        redis_url, tmp_path, TASKROUTER_CELERY_BROKER_URL=AMQP_URL, TASKROUTER_POLICY=str(policy)
    ) as s:
        try:
            s.start_worker("celery", queues=[queue])
            s.wait_ready(("celery",))
            job = app.amqp_echo.enqueue({"via": "rabbitmq"})
            assert job.backend == "celery" and job.queue == queue
            assert job.wait(30) == {"via": "rabbitmq"}
            s.runtime.celery.ping()
            assert s.runtime.celery.queue_depths()[queue] == 0
        finally:
            s.stop()
            with s.runtime.celery_app.connection_for_write() as conn:
                conn.default_channel.queue_delete(queue)
