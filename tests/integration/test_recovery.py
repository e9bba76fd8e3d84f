"""Nothing lost, nothing run twice by accident: dead workers, ghost copies, slow jobs,
idempotency keys and global limits, with real workers and real signals."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid

import pytest

from taskrouter.backends.celery_app import EXECUTE
from taskrouter.backends.celery_unacked import held_dispatches
from tests.helpers import max_overlap
from tests.integration import app
from tests.integration.conftest import own_worker, poll

pytestmark = pytest.mark.integration


def _running(stack, job_id: str) -> dict[str, str] | None:
    record = stack.runtime.store.read(job_id)
    return record if record and record["state"] == "running" else None


def _count(stack, key: str) -> int:
    return int(stack.runtime.store.client.get(key) or 0)


def _executor_pid(record: dict[str, str]) -> int:
    # "engine@host:<worker pid>/<pid of the process running the task>"
    return int(record["worker"].rsplit("/", 1)[1])


@pytest.mark.parametrize(
    "engine, fn, queue",
    [("rq", app.slow_once_rq, "fault-rq"), ("celery", app.slow_once_celery, "fault-celery")],
)
def test_process_killed_mid_task_is_retried_within_the_lease(stack, tmp_path, engine, fn, queue):
    counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
    with own_worker(stack, engine, [queue]):
        marker = tmp_path / "marker"
        job = fn.enqueue(str(marker), 30, counter)
        # The marker, not the claim, says the body began: a kill between the two would
        # leave the retry without a marker, sleeping the whole 30 s.
        record = poll(lambda: marker.exists() and _running(stack, job.id), 30, "the job to start")
        os.kill(_executor_pid(record), signal.SIGKILL)  # RQ's work-horse / Celery's pool child
        killed = time.time()
        assert job.wait(30) == "done"
    detected = job.history[0]["finished_at"] / 1000 - killed
    assert job.attempts == 2 and _count(stack, counter) == 2
    assert job.history[0]["error"]["type"] == "WorkerLost"
    # lease 2 s + janitor pass 0.25 s (tests/integration/conftest.py), with slack for CI
    assert detected < 6, detected


def test_orphaned_rq_work_horse_keeps_its_job_and_runs_once(stack, tmp_path):
    counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
    with own_worker(stack, "rq", ["fault-rq"]) as supervisor:
        job = app.slow_once_rq.enqueue(str(tmp_path / "marker"), 5, counter)
        record = poll(lambda: _running(stack, job.id), 30, "the job to start")
        rq_worker = int(record["worker"].split(":")[-1].split("/")[0])
        assert rq_worker != supervisor.pid
        os.kill(rq_worker, signal.SIGKILL)  # the horse lives on; the supervisor restarts
        assert job.wait(30) == "done"
    assert job.attempts == 1 and _count(stack, counter) == 1


def test_jobs_a_killed_celery_worker_reserved_are_sent_again_once_it_is_seen_dead(stack):
    # fault-quick's profile is short, so its worker reserves messages ahead (prefetch 4),
    # which kombu gives back only after the visibility window.
    assert stack.runtime.derived.visibility_timeout >= 300
    with own_worker(stack, "celery", ["fault-quick"], concurrency=1) as worker:
        blocker = app.hold.enqueue(8, "blocker")
        record = poll(lambda: _running(stack, blocker.id), 30, "the blocker to start")
        waiting = [app.hold.enqueue(0, i) for i in range(3)]

        def reserved() -> bool:
            held = {job_id for job_id, _ in held_dispatches(stack.runtime, time.time())}
            return {job.id for job in waiting} <= held

        poll(reserved, 30, "the worker to reserve the waiting jobs")
        assert all(job.refresh().state == "queued" for job in waiting)
        celery_main = int(record["worker"].split(":")[-1].split("/")[0])
        assert celery_main == worker.pid  # a taskrouter worker is the Celery worker itself
        os.kill(celery_main, signal.SIGKILL)  # the whole worker, not only a pool child
        killed = time.monotonic()
    # The other workers' duties see its heartbeat lapse and give those jobs a new
    # dispatch; a new worker on the queue (as a process manager starts) runs them.
    with own_worker(stack, "celery", ["fault-quick"], concurrency=1, tag="again"):
        assert [job.wait(30) for job in waiting] == [0, 1, 2]
    assert time.monotonic() - killed < 30  # the window, not the broker's 300 s or more
    for job in waiting:
        record = stack.runtime.store.read(job.id)
        assert (record["attempts"], record["dispatch"]) == ("1", "2")


def test_slow_job_outliving_many_leases_is_never_touched(stack, tmp_path):
    counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
    with own_worker(stack, "rq", ["fault-rq"]):
        job = app.slow_once_rq.enqueue(str(tmp_path / "marker"), 7, counter)  # 3.5 leases
        assert job.wait(30) == "done"
    assert job.attempts == 1 and _count(stack, counter) == 1


def test_ghost_copy_of_a_running_celery_task_does_not_run(stack, tmp_path):
    counter = f"{stack.prefix}:t:count:{uuid.uuid4().hex}"
    with own_worker(stack, "celery", ["fault-celery"], concurrency=2):
        job = app.slow_once_celery.enqueue(str(tmp_path / "marker"), 4, counter)
        poll(lambda: _running(stack, job.id), 30, "the job to start")
        # What a visibility-timeout redelivery looks like: the same dispatch, again.
        stack.runtime.celery_app.send_task(EXECUTE, args=(job.id, 1), queue="fault-celery")
        assert job.wait(30) == "done"
    assert job.attempts == 1 and _count(stack, counter) == 1


def test_idempotency_key_gives_one_job_under_concurrent_submitters(stack):
    key = f"order-{uuid.uuid4().hex}"
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        ids.append(app.echo.using(idempotency_key=key).enqueue("once").id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert app.echo.using(idempotency_key=key).enqueue("again").id == ids[0]
    assert app.echo.using(idempotency_key=key + "-other").enqueue("x").id != ids[0]


def _spans(stack, key: str) -> list[tuple[float, float]]:
    raw = stack.runtime.store.client.lrange(key, 0, -1)
    return sorted(tuple(map(float, item.split(":"))) for item in raw)  # type: ignore[misc]


@pytest.mark.parametrize(
    "engine, fn, queue, workers",
    [("celery", app.capped, "limits-celery", 2), ("rq", app.capped_rq, "limits-rq", 1)],
)
def test_concurrency_cap_holds_across_workers(stack, engine, fn, queue, workers):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    with contextlib.ExitStack() as running:
        for n in range(workers):
            running.enter_context(own_worker(stack, engine, [queue], concurrency=3, tag=str(n)))
        jobs = [fn.enqueue(key, 0.6) for _ in range(8)]
        for job in jobs:
            job.wait(60)
    spans = _spans(stack, key)
    assert len(spans) == 8
    assert max_overlap(spans) == 2  # 3-6 processes available, the profile allows 2


def test_rate_limit_bounds_starts_per_window(stack):
    key = f"{stack.prefix}:t:spans:{uuid.uuid4().hex}"
    with own_worker(stack, "celery", ["limits-celery"], concurrency=3):
        jobs = [app.rated.enqueue(key) for _ in range(7)]
        for job in jobs:
            job.wait(60)
    starts = [s for s, _ in _spans(stack, key)]
    assert len(starts) == 7
    # rate_limit 3/2s: any 4 consecutive starts span at least the 2 s window
    assert min(starts[i + 3] - starts[i] for i in range(len(starts) - 3)) >= 1.95


def test_many_janitors_reap_a_dead_job_once(stack):
    store = stack.runtime.store
    job = app.long_echo.enqueue("x")  # handled by the stack; we only need a record
    job.wait(30)
    # A record that looks like a job whose worker died a moment ago.
    fake = f"{job.id[:-4]}dead"
    store.client.hset(
        store.keys.job(fake),
        mapping={
            "id": fake,
            "task": "t.long_echo",
            "profile": "long",
            "backend": "rq",
            "queue": "long",
            "state": "running",
            "attempts": 1,
            "max_attempts": 1,
            "dispatch": 1,
            "created_at": 1,
            "lease_until": 1,
            "keep_ms": 60_000,
        },
    )
    store.client.zadd(store.keys.running, {fake: 1})
    results: list[list[tuple[str, str]]] = []
    threads = [threading.Thread(target=lambda: results.append(store.reap())) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    outcomes = [o for r in results for o in r if o[0] == fake]
    assert outcomes == [(fake, "failed")]
    assert store.read(fake)["state"] == "failed"
