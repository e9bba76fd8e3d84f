"""A tasks module whose worker crashes as soon as it starts (test_restarts.py), in the
way CRASH_MODE says: "celery" breaks the Celery worker's start-up (its first duties
tick raises, which Celery treats as an unrecoverable error); "rq" makes every RQ worker
process the pool forks exit at once."""

from __future__ import annotations

import os
from typing import Any

from taskrouter import task


@task(profile="quick", name="t.crash_echo")
def echo(value: Any) -> Any:
    return value


@task(profile="long", name="t.crash_echo_rq")
def echo_rq(value: Any) -> Any:
    return value


def _broken(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("crash_app broke the worker at start")


_MODE = os.environ.get("CRASH_MODE", "")
if _MODE == "celery":
    from taskrouter.backends.duties import Duties

    Duties.tick = _broken  # type: ignore[method-assign]
elif _MODE == "rq":
    _main = os.getpid()
    os.register_at_fork(after_in_child=lambda: os._exit(3) if os.getppid() == _main else None)
