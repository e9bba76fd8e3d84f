"""The no-op tasks of ``benchmarks/overhead.py``, through taskrouter and through the raw
engine APIs, and the raw engines' workers.

Two kinds of task, the same on every path:

- ``noop(i)``: does nothing. Only enqueued (the enqueue-rate phase); nothing consumes
  its queues.
- ``stamp(key)``: its first statement takes ``time.time()``, then it pushes that onto
  the Redis list ``key``, where the benchmark waits for it (BLPOP). The latency is that
  start time minus the time taken just before the enqueue call, so every path is
  measured the same way, to the microsecond, and includes whatever runs before the
  function body (taskrouter's claim, Celery's and RQ's own bookkeeping).

Worker processes: taskrouter's are ``python -m taskrouter worker --app
benchmarks.bench_app ...``; the raw engines' are ``python -m benchmarks.bench_app
raw-celery|raw-rq QUEUE``, built from the same environment (TASKROUTER_REDIS_URL,
TASKROUTER_KEY_PREFIX, TASKROUTER_POLICY, RQ_KEY_PREFIX) so that they share the broker,
the key prefixes and every Celery setting taskrouter derives.

Neither rq nor celery is imported at module level: RQ reads RQ_KEY_PREFIX at import, and
a taskrouter worker imports this module before it builds its runtime.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from taskrouter import task

# Profiles and queues of benchmarks/overhead.py's policy.
RATE_CELERY, RATE_RQ = "bench_rate_celery", "bench_rate_rq"
LAT_CELERY, LAT_RQ = "bench_lat_celery", "bench_lat_rq"
RAW_RATE_CELERY, RAW_RATE_RQ = "raw_rate_celery", "raw_rate_rq"
RAW_LAT_CELERY, RAW_LAT_RQ = "raw_lat_celery", "raw_lat_rq"

RAW_NOOP, RAW_STAMP = "bench.raw_noop", "bench.raw_stamp"
# The raw workers log as taskrouter's do (INFO: one line or two per task, on both paths).
LOGLEVEL = os.environ.get("BENCH_RAW_LOGLEVEL", "INFO")

_client: Any = None
_client_pid = -1


def _redis() -> Any:
    """This process's client for stamps (a forked child builds its own)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        import redis

        _client = redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
        _client_pid = os.getpid()
    return _client


def stamp(key: str) -> None:
    started = time.time()
    _redis().rpush(key, _stamp_value(started))


# Diagnostics (overhead.py --trace): the moment Celery's pool process picks the task up
# (task_prerun, before taskrouter's claim) goes with the stamp, which then splits the
# latency into delivery and what runs before the function body.
_TRACE = bool(os.environ.get("BENCH_TRACE"))
_prerun = 0.0


def _stamp_value(started: float) -> str:
    return f"{started!r},{_prerun!r}" if _TRACE and _prerun else repr(started)


def _on_prerun(**_: Any) -> None:
    global _prerun
    _prerun = time.time()


if _TRACE:
    from celery.signals import task_prerun

    task_prerun.connect(_on_prerun, weak=False)


def noop(i: int) -> None:
    return None


# -- taskrouter ---------------------------------------------------------------------------

noop_celery = task(noop, profile=RATE_CELERY, name="bench.noop_celery")
noop_rq = task(noop, profile=RATE_RQ, name="bench.noop_rq")
stamp_celery = task(stamp, profile=LAT_CELERY, name="bench.stamp_celery")
stamp_rq = task(stamp, profile=LAT_RQ, name="bench.stamp_rq")


# -- raw RQ: plain functions, imported by name by RQ's worker ----------------------------


def raw_noop(i: int) -> None:
    return None


def raw_stamp(key: str) -> None:
    started = time.time()
    _redis().rpush(key, _stamp_value(started))


# -- raw Celery -----------------------------------------------------------------------------


def raw_celery_app(like: Any = None) -> Any:
    """A plain Celery app with every setting of taskrouter's app ``like`` (same broker,
    JSON only, acks_late, prefetch, visibility timeout, kombu key prefix) and two plain
    tasks. ``like`` defaults to the app taskrouter builds from the environment."""
    from celery import Celery

    if like is None:
        from taskrouter.backends.celery_app import make_app
        from taskrouter.derive import derive
        from taskrouter.policy_file import load_policy
        from taskrouter.settings import Settings

        settings = Settings.from_env()
        like = make_app(settings, derive(load_policy(settings.policy_path)))
    app = Celery(
        "rawbench",
        broker=like.conf.broker_url,
        backend=like.conf.result_backend,
        set_as_current=False,
    )
    app.conf.update({k: v for k, v in like.conf.changes.items() if k != "deprecated_settings"})

    @app.task(name=RAW_NOOP)
    def celery_noop(i: int) -> None:
        return None

    @app.task(name=RAW_STAMP)
    def celery_stamp(key: str) -> None:
        started = time.time()
        _redis().rpush(key, _stamp_value(started))

    return app


def _run_raw_celery(queue: str) -> int:
    from taskrouter.backends.celery_app import is_redis_url
    from taskrouter.derive import derive, prefetch_multiplier
    from taskrouter.policy_file import load_policy
    from taskrouter.settings import Settings

    settings = Settings.from_env()
    derived = derive(load_policy(settings.policy_path))
    app = raw_celery_app()
    # The prefetch taskrouter's worker would use for its latency queue (services/worker.py).
    multiplier = prefetch_multiplier(derived, [LAT_CELERY])
    if multiplier == 1 and is_redis_url(settings.broker_url):
        app.conf.worker_disable_prefetch = True
    worker = app.Worker(
        queues=[queue],
        concurrency=1,
        pool="prefork",
        loglevel=LOGLEVEL,
        hostname=f"rawbench-{os.getpid()}@%h",
        prefetch_multiplier=multiplier,
        without_gossip=True,
        without_mingle=True,
        # Task events as the taskrouter worker beside it sends them (on by default, for
        # Flower), so that both pay for the same messages.
        task_events=os.environ.get("BENCH_EVENTS", "1") == "1",
    )
    worker.start()
    return int(worker.exitcode or 0)


def _run_raw_rq(queue: str) -> int:
    import redis
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    conn = redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])
    q = Queue(queue, connection=conn, serializer=JSONSerializer)
    worker = Worker([q], connection=conn, serializer=JSONSerializer, name=f"rawbench-{os.getpid()}")
    worker.work(with_scheduler=False, logging_level=LOGLEVEL)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("raw-celery", "raw-rq"):
        sys.exit("usage: python -m benchmarks.bench_app raw-celery|raw-rq QUEUE")
    run = _run_raw_celery if sys.argv[1] == "raw-celery" else _run_raw_rq
    sys.exit(run(sys.argv[2]))
