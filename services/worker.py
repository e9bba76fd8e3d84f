"""``taskrouter worker``: the workers of one lane for the policy's queues, with the
settings derived from the policy.

A worker is the engine's own process tree, nothing more: ``--backend celery`` is a
Celery worker in this process (its prefork children beside it), ``--lane io`` a Celery
worker with the I/O lane's pool (one process), ``--backend rq`` RQ's worker pool (this
process, and one RQ worker per ``--concurrency``). The router's duties (heartbeat, due
jobs, the janitor's passes) run in the main process's own loop. The process imports only
its own engine.

A Celery worker that crashes restarts itself in place (``exec``, same pid) with a growing
delay; an RQ pool restarts its RQ workers the same way. After ``QUICK_FAILURES`` crashes
in a row, each within ``QUICK_FAILURE`` seconds of a start, the worker gives up with the
crash's error instead of looping.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence

from taskrouter import _runtime
from taskrouter.backends.duties import Duties
from taskrouter.backends.heartbeats import WorkerInfo, worker_name
from taskrouter.backends.hooks import WorkerContext, default_hooks, install_context
from taskrouter.backends.runner import patiently
from taskrouter.backends.runtime import Runtime
from taskrouter.derive import lane_queues
from taskrouter.errors import TaskrouterError
from taskrouter.policy import LANE_ENGINE, Lane
from taskrouter.registry import registered
from taskrouter.schedule_file import check_tasks
from taskrouter.settings import QUICK_FAILURE, QUICK_FAILURES, RESTART_BACKOFF, Settings

from .processes import cli_command

log = logging.getLogger("taskrouter.worker")

_CRASHES = "TASKROUTER_WORKER_CRASHES"  # quick crashes in a row so far (after an exec)
_STARTED = "TASKROUTER_WORKER_STARTED"  # when this life began (epoch seconds)


def import_app(module: str) -> None:
    """Import the user's module so that its @task functions register."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise TaskrouterError(f"cannot import --app {module!r}: {exc}") from exc
    if not registered():
        raise TaskrouterError(f"--app {module!r} registers no @task functions")


def check_profiles(runtime: Runtime) -> None:
    missing = sorted(
        f"{t.name} (profile {t.profile!r})"
        for t in registered().values()
        if t.profile not in runtime.derived.profiles
    )
    if missing:
        raise TaskrouterError(
            f"tasks use profiles that {runtime.derived.policy.path} does not define: "
            + ", ".join(missing)
        )


def check_schedules(runtime: Runtime) -> None:
    """Every schedule of the policy names a task the app registers (PolicyError)."""
    policy = runtime.derived.policy
    check_tasks(policy.schedules, policy.path, registered())


def prepare(
    app_module: str, settings: Settings | None = None, *, engines: Sequence[str] = ("celery", "rq")
) -> Runtime:
    import_app(app_module)
    runtime = Runtime.from_env(settings, engines=engines)
    check_profiles(runtime)
    check_schedules(runtime)
    # A worker (re)started while Redis restarts waits for it, as a running one does,
    # rather than exiting for good.
    patiently("worker start", runtime.publish_limits)
    _warn_if_evicting(runtime)
    _runtime.install(runtime)
    return runtime


def _warn_if_evicting(runtime: Runtime) -> None:
    """Say so at start when Redis may evict job records (README, "Redis memory")."""
    from taskrouter.backends import memory

    try:
        warning = memory.check(runtime.store.client)
    except TaskrouterError:
        return  # Redis answered publish_limits a moment ago; the duties report it
    if warning:
        log.warning("%s", warning)


def run_worker(
    app_module: str,
    lane: Lane,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    *,
    events: bool = True,
    settings: Settings | None = None,
) -> int:
    os.environ.setdefault(_STARTED, str(time.time()))
    engine = LANE_ENGINE[lane]
    runtime = prepare(app_module, settings, engines=(engine,))
    known = lane_queues(runtime.derived, lane)
    chosen = list(queues) if queues else known
    if not chosen:
        raise TaskrouterError(
            f"the policy routes no profile to the {lane} lane: nothing to consume"
        )
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        log.warning("queues %s are not %s lane queues in the policy", ", ".join(unknown), lane)
    name = worker_name(engine)
    info = WorkerInfo(
        engine=engine,
        name=name,
        lane=lane,
        host=name.split("@", 1)[1].rsplit(":", 1)[0],
        pid=os.getpid(),
        queues=tuple(chosen),
        concurrency=concurrency or 0,
        started_at=int(time.time() * 1000),
        node=f"taskrouter-{lane}-{os.getpid()}@{socket.gethostname()}"
        if engine == "celery"
        else "",
    )
    ctx = WorkerContext(
        runtime, name, int(runtime.settings.lease_ttl * 1000), hooks=default_hooks()
    )
    install_context(ctx)
    duties = Duties(runtime, info, restarted=bool(os.environ.get(_CRASHES)))
    if engine == "rq":
        return _run_rq(runtime, duties, chosen, concurrency or 1)
    from taskrouter.backends import celery_worker

    code = celery_worker.run(
        runtime, ctx, duties, lane=lane, queues=chosen, concurrency=concurrency, events=events
    )
    if code != 0:
        _restart_after_crash(code)
    return code


def _run_rq(runtime: Runtime, duties: Duties, queues: list[str], size: int) -> int:
    from taskrouter.backends.rq_worker import TaskrouterPool

    pool = TaskrouterPool(queues, runtime.rq.connection, size, duties)
    try:
        pool.start(burst=False, logging_level="INFO")
    finally:
        duties.leave()
    if pool.failed:
        raise TaskrouterError(pool.failed)
    return 0


def _redis_answers() -> bool:
    try:
        _runtime.current().ping()
    except Exception:
        return False
    return True


def _restart_after_crash(code: int) -> None:
    """Start this worker again in place, after a delay that grows with each quick crash;
    raise instead once the crashes keep coming."""
    started = float(os.environ.get(_STARTED) or time.time())
    quick = int(os.environ.get(_CRASHES) or 0)
    quick = quick + 1 if time.time() - started < QUICK_FAILURE else 1
    if not _redis_answers():
        quick = 1  # Redis restarting is no crash of the app: wait for it, never give up
    if quick >= QUICK_FAILURES:
        raise TaskrouterError(
            f"the worker crashed {quick} times in a row within {QUICK_FAILURE:g} s of starting "
            f"(exit code {code}); see its error above"
        )
    delay = RESTART_BACKOFF[min(quick, len(RESTART_BACKOFF)) - 1]
    log.error("the worker exited with %s; starting it again in %.1f s", code, delay)
    time.sleep(delay)
    os.environ[_CRASHES] = str(quick)
    os.environ[_STARTED] = str(time.time())
    argv = cli_command(*sys.argv[1:])
    os.execv(argv[0], argv)
