"""The tasks the integration tests' workers load (--app tests.integration.app)."""

from __future__ import annotations

import os
import time
from typing import Any

from router import task


@task(profile="quick", name="t.echo")
def echo(value: Any) -> Any:
    return value


@task(profile="long", name="t.long_echo")
def long_echo(value: Any) -> Any:
    return value


@task(profile="quick", name="t.pid")
def pid() -> int:
    return os.getpid()


@task(profile="quick_retry", name="t.fail_quick")
def fail_quick(message: str) -> None:
    raise ValueError(message)


@task(profile="long_retry", name="t.fail_long")
def fail_long(message: str) -> None:
    raise ValueError(message)


@task(profile="quick_timeout", name="t.sleep_quick")
def sleep_quick(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(profile="long_timeout", name="t.sleep_long")
def sleep_long(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(profile="long", name="t.sleep_rq")
def sleep_rq(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(profile="quick", name="t.sleep_celery")
def sleep_celery(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(profile="quick", name="t.touch")
def touch(path: str) -> str:
    """Writes a file: tests use it to see whether (and how often) a job ran."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return path


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["TASKROUTER_REDIS_URL"])


@task(profile="fault_celery", name="t.slow_once_celery")
def slow_once_celery(marker: str, seconds: float, counter: str) -> str:
    """Counts its executions; sleeps only on its first run (so a retry finishes fast)."""
    _redis().incr(counter)
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)
    return "done"


@task(profile="fault_rq", name="t.slow_once_rq")
def slow_once_rq(marker: str, seconds: float, counter: str) -> str:
    _redis().incr(counter)
    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)
    return "done"


def _span(key: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    _redis().rpush(key, f"{start:.6f}:{time.time():.6f}")


@task(profile="capped", name="t.capped")
def capped(key: str, seconds: float) -> None:
    _span(key, seconds)


@task(profile="capped_rq", name="t.capped_rq")
def capped_rq(key: str, seconds: float) -> None:
    _span(key, seconds)


@task(profile="rated", name="t.rated")
def rated(key: str) -> None:
    _span(key, 0.0)


@task(profile="amqp", name="t.amqp_echo")
def amqp_echo(value: Any) -> Any:
    return value
