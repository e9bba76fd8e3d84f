"""The tasks the integration tests' workers load (--app tests.integration.app)."""

from __future__ import annotations

import os
import time
from typing import Any

from taskrouter import task


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


@task(profile="fault_quick", name="t.hold")
def hold(seconds: float, value: Any) -> Any:
    """A short profile's task (its worker reserves messages ahead: prefetch)."""
    time.sleep(seconds)
    return value


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


# -- workflows (tests/integration/test_workflows*.py) --------------------------------------


@task(profile="quick", name="t.wf_add")
def wf_add(x: Any, y: Any) -> Any:
    return x + y


@task(profile="quick", name="t.wf_shape")
def wf_shape(first: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """What a step received: its first argument (with its type), then the others."""
    return {"first": first, "type": type(first).__name__, "args": list(args), "kwargs": kwargs}


@task(profile="quick", name="t.wf_square")
def wf_square(x: int, seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return x * x


@task(profile="long", name="t.wf_square_rq")
def wf_square_rq(x: int, seconds: float = 0.0) -> int:
    time.sleep(seconds)
    return x * x


@task(profile="quick", name="t.wf_collect")
def wf_collect(results: Any, runs_key: str) -> Any:
    """A chord body: records each run in a Redis list, so tests can count the runs."""
    _redis().rpush(runs_key, os.getpid())
    return results


@task(profile="quick_retry", name="t.wf_flaky")
def wf_flaky(counter: str, failures: int) -> int:
    """Fails its first ``failures`` runs, then returns how many runs it took."""
    runs = int(_redis().incr(counter))
    if runs <= failures:
        raise ValueError(f"flaky run {runs}")
    return runs


@task(profile="long_retry", name="t.wf_fail_rq")
def wf_fail_rq(message: str, seconds: float = 0.0) -> None:
    time.sleep(seconds)
    raise ValueError(message)


# -- the API's tests (test_api.py) ----------------------------------------------------------


@task(profile="long", name="t.touch_rq")
def touch_rq(path: str) -> str:
    """touch on RQ: tests use it to see whether a queued-then-canceled job ever ran."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return path


def _pid_sleep(path: str, seconds: float) -> str:
    # The pid first, so that a test can see the process that runs the job stop.
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(seconds)
    return "woke"


@task(profile="long", name="t.pid_sleep_rq")
def pid_sleep_rq(path: str, seconds: float) -> str:
    return _pid_sleep(path, seconds)


@task(profile="quick", name="t.pid_sleep_celery")
def pid_sleep_celery(path: str, seconds: float) -> str:
    return _pid_sleep(path, seconds)


# -- the dashboard's tests (test_ui*.py) ----------------------------------------------------


@task(profile="parked", name="t.ui_park")
def ui_park(value: Any) -> Any:
    """On a queue no worker of the session's stack serves: it stays queued."""
    return value


@task(profile="quick", name="t.ui_fail")
def ui_fail(message: str) -> None:
    raise ValueError(message)


# -- the hostile-input tests (test_hostile_*.py) ------------------------------------------------


@task(profile="quick", name="t.echo_call")
def echo_call(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Its call exactly as the worker received it (hostile-input tests)."""
    return {"args": args, "kwargs": kwargs}


@task(profile="long", name="t.echo_call_rq")
def echo_call_rq(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": args, "kwargs": kwargs}


# -- values the codec cannot store (test_unstorable.py) -------------------------------------


def _unstorable(kind: str, counter: str) -> Any:
    _redis().incr(counter)  # counts executions: a result that cannot be stored must not rerun
    return 10**5000 if kind == "huge-int" else "name-\udcff.pdf"


@task(profile="quick_retry", name="t.unstorable_celery")
def unstorable_celery(kind: str, counter: str) -> Any:
    return _unstorable(kind, counter)


@task(profile="long_retry", name="t.unstorable_rq")
def unstorable_rq(kind: str, counter: str) -> Any:
    return _unstorable(kind, counter)


# -- jobs changed outside taskrouter (test_outside.py) ---------------------------------------


@task(profile="long_retry", name="t.flaky_rq")
def flaky_rq(counter: str, failures: int) -> int:
    """Fails its first ``failures`` runs, then returns how many runs it took."""
    runs = int(_redis().incr(counter))
    if runs <= failures:
        raise ValueError(f"flaky run {runs}")
    return runs


from tests.integration import flow_app  # noqa: E402, F401 - the flow-control tests' tasks
