"""``taskrouter worker``: one engine's worker for the policy's queues, with the settings
derived from the policy, and a janitor process beside it.

No thread is ever started in a process that forks (Celery's main process forks its pool,
an RQ worker forks a work-horse per job): a fork taken while another thread holds a lock
(an import lock, a connection pool lock) deadlocks the child. So the janitor and the
heartbeat run in their own process, and the RQ supervisor starts workers with exec.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from taskrouter import _runtime
from taskrouter.backends.celery_backend import is_redis_url
from taskrouter.backends.execute import WorkerContext, install_context, worker_name
from taskrouter.backends.runtime import Runtime
from taskrouter.derive import celery_queues, prefetch_multiplier, rq_queues
from taskrouter.errors import TaskrouterError
from taskrouter.registry import registered
from taskrouter.settings import Settings

from .embedded import pdeathsig_preexec
from .processes import cli_command, stop

log = logging.getLogger("taskrouter.worker")


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


def prepare(app_module: str, settings: Settings | None = None) -> Runtime:
    import_app(app_module)
    runtime = Runtime.from_env(settings)
    check_profiles(runtime)
    runtime.publish_limits()
    _runtime.install(runtime)
    return runtime


def start_janitor(engine: str, name: str) -> subprocess.Popen[bytes]:
    """The janitor for this worker: beats its heartbeat while this process lives."""
    return subprocess.Popen(
        cli_command("janitor", "--beat", f"{engine}|{name}", "--parent", str(os.getpid()))
    )


def run_worker(
    app_module: str,
    engine: str,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    *,
    single: bool = False,
    settings: Settings | None = None,
) -> int:
    runtime = prepare(app_module, settings)
    known = celery_queues(runtime.derived) if engine == "celery" else rq_queues(runtime.derived)
    chosen = list(queues) if queues else known
    if not chosen:
        raise TaskrouterError(f"the policy routes no profile to {engine}: nothing to consume")
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        log.warning("queues %s are not %s queues in the policy", ", ".join(unknown), engine)
    name = worker_name(engine)
    lease_ms = int(runtime.settings.lease_ttl * 1000)
    install_context(WorkerContext(store=runtime.store, name=name, lease_ms=lease_ms))
    if single:
        if engine == "celery":
            return _run_celery(runtime, chosen, concurrency or 2, name)
        return _run_rq_single(runtime, chosen, name)
    janitor = start_janitor(engine, name)
    try:
        if engine == "celery":  # one Celery worker with its own prefork pool
            return _supervise(
                app_module, engine, chosen, 1, concurrency or 2, after_death=runtime.requeue_held
            )
        return _supervise(app_module, engine, chosen, concurrency or 1, 1)  # forking workers
    finally:
        stop(janitor, timeout=30)


def _run_celery(runtime: Runtime, queues: list[str], concurrency: int, name: str) -> int:
    app = runtime.celery_app
    multiplier = prefetch_multiplier(runtime.derived, queues)
    if multiplier == 1 and is_redis_url(runtime.settings.broker_url):
        # Long tasks: reserve nothing beyond what runs, so no message waits behind a
        # long task in this worker while another worker is idle.
        app.conf.worker_disable_prefetch = True
    worker = app.Worker(
        queues=queues,
        concurrency=concurrency,
        pool="prefork",
        loglevel="INFO",
        hostname=f"{name.replace('@', '-')}@%h",
        prefetch_multiplier=multiplier,
        without_gossip=True,
        without_mingle=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


def _run_rq_single(runtime: Runtime, queues: list[str], name: str) -> int:
    from taskrouter.backends.rq_backend import make_worker

    worker = make_worker(runtime.rq.connection, queues, name)
    ok = worker.work(with_scheduler=False, logging_level="INFO")
    return 0 if ok or ok is None else 1


def _supervise(
    app_module: str,
    engine: str,
    queues: list[str],
    slots: int,
    concurrency: int,
    *,
    after_death: Callable[[float], list[str]] | None = None,
) -> int:
    """Run ``slots`` workers of ``engine`` as child processes; restart any that exits
    (an RQ worker exits on a Redis TimeoutError, kombu can crash a Celery worker while a
    Redis restart interrupts it); on SIGTERM/SIGINT stop them all (warm: running jobs
    finish). The children get SIGTERM if this process dies.

    ``after_death(t)`` runs once a child has died at time ``t`` (Runtime.requeue_held:
    the jobs whose messages a dead Celery worker reserved are sent again), retried every
    pass until Redis takes it."""
    stopping = False
    children: dict[int, subprocess.Popen[bytes]] = {}
    args = cli_command(
        "worker",
        "--app",
        app_module,
        "--backend",
        engine,
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--single",
    )
    preexec = pdeathsig_preexec()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, preexec_fn=preexec)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(slots):
        children[slot] = start()
    log.info("%s workers %s on queues %s", engine, [p.pid for p in children.values()], queues)
    died: float | None = None  # when a child last died, until after_death has run
    while not stopping:
        for slot, proc in list(children.items()):
            if proc.poll() is not None and not stopping:
                log.warning(
                    "%s worker %s exited with %s; restarting", engine, proc.pid, proc.returncode
                )
                children[slot] = start()
                died = time.time()
        if died is not None and after_death is not None:
            try:
                sent = after_death(died)
            except TaskrouterError as exc:  # Redis unreachable: try again next pass
                log.warning("jobs the dead worker held: not sent again yet (%s)", exc)
            except Exception:  # never let it take the supervisor (and its workers) down
                log.exception("jobs the dead worker held: left to the janitor (visibility window)")
                died = None
            else:
                died = None
                if sent:
                    log.warning("sent again %d jobs the dead worker held: %s", len(sent), sent)
        time.sleep(0.5)
    for proc in children.values():
        stop(proc, timeout=120)
    return 0
