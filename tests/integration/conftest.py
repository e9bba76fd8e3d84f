"""Real worker processes of both engines, started once per test session."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskrouter.backends.store import JobStore
from taskrouter.services.processes import cli_command, isolated_env, stop, stop_all
from tests.conftest import STACK_PREFIX, delete_prefix
from tests.helpers import Clock, poll

ROOT = Path(__file__).resolve().parents[2]
POLICY = Path(__file__).with_name("policy.yaml")
APP = "tests.integration.app"
pytestmark = pytest.mark.integration
# Queues served only by workers that their own tests start.
OWN_WORKER_QUEUES = ("fault-", "limits-", "flow-", "parked")


def worker_env(redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    # Short leases and janitor passes, so that recovery tests finish in seconds.
    env = isolated_env(
        redis_url,
        prefix,
        pythonpath=str(ROOT),
        policy=str(POLICY),
        lease_ttl="2s",
        janitor_interval="250ms",
    )
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return cli_command(*args)


class Stack:
    """Workers of both engines on one key prefix, and a runtime to talk to them."""

    def __init__(self, redis_url: str, prefix: str, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.env = worker_env(redis_url, prefix)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.runtime: Any = None

    def start_worker(
        self, engine: str, concurrency: int = 2, tag: str = "", queues: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A worker of ``engine``; by default on every queue of that engine but the ones
        of tests that start (and kill) their own workers."""
        if queues is None:
            queues = [q for q in self.queues(engine) if not q.startswith(OWN_WORKER_QUEUES)]
        log = open(self.log_dir / f"{engine}{tag}.log", "ab")  # noqa: SIM115
        args = ["worker", "--app", APP, "--backend", engine, "--concurrency", str(concurrency)]
        proc = subprocess.Popen(
            cli(*args, "--queues", ",".join(queues)),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs[engine + tag] = proc
        return proc

    def queues(self, engine: str) -> list[str]:
        from taskrouter.derive import celery_queues, rq_queues

        pick = celery_queues if engine == "celery" else rq_queues
        return pick(self.runtime.derived)

    def wait_ready(self, engines: tuple[str, ...] = ("celery", "rq"), timeout: float = 60) -> None:
        from taskrouter.backends.heartbeats import WorkerRegistry

        registry = WorkerRegistry(self.runtime.store)

        def ready() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    pytest.fail(f"worker {name} exited with {proc.returncode}: {self.log(name)}")
            return all(registry.alive(e) for e in engines)

        poll(ready, timeout, f"workers {engines}", interval=0.1)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self) -> None:
        stop_all(self.procs.values())


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Celery and RQ workers (2 processes each) running tests.integration.app."""
    import tests.integration.app  # noqa: F401 - registers the tasks in this process too
    from taskrouter import _runtime
    from taskrouter.backends.runtime import Runtime
    from taskrouter.settings import Settings

    prefix = STACK_PREFIX
    s = Stack(redis_url, prefix, tmp_path_factory.mktemp("workers"))
    settings = Settings.from_env(s.env)
    s.runtime = Runtime.from_env(settings)
    previous = _runtime.install(s.runtime)
    try:
        s.start_worker("celery")
        s.start_worker("rq")
        s.wait_ready()
        yield s
    finally:
        s.stop()
        _runtime.install(previous)
        delete_prefix(redis_url, prefix)


@contextlib.contextmanager
def own_worker(
    stack: Stack, engine: str, queues: list[str], concurrency: int = 1, tag: str = ""
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker only for ``queues``, ready when this yields, stopped afterwards."""
    from taskrouter.backends.heartbeats import WorkerRegistry

    name = f"{engine}-own{tag}-{'-'.join(queues)}"
    proc = stack.start_worker(engine, concurrency, tag=name, queues=queues)
    registry = WorkerRegistry(stack.runtime.store)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"worker {name} exited: {stack.log(engine + name)}")
        return any(n.endswith(f":{proc.pid}") for n in registry.alive(engine))

    poll(up, 60, f"worker {name}", interval=0.1)
    try:
        yield proc
    finally:
        stop(proc, 30)
        stack.procs.pop(engine + name, None)


# -- a job store on this test's key prefix, with a clock the test moves -----------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_url: str, key_prefix: str, clock: Clock) -> Iterator[JobStore]:
    s = JobStore.from_url(redis_url, key_prefix, clock=clock)
    yield s
    s.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()
