"""Redis full (issue 15, item 3): a Redis of its own with maxmemory and noeviction,
filled to the limit while jobs of both engines run. Submitting fails with an error that
names Redis memory (HTTP 503 with Retry-After), nothing is half written, the running jobs
end in a true state once memory is freed, and the workers go on without a restart."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from benchmarks import soak_app
from benchmarks.soak import Server, worker_env, write_policy
from taskrouter.errors import StorageFull
from taskrouter.services.processes import free_port, stop_all
from tests.conftest import STACK_PREFIX
from tests.helpers import poll

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
APP = "benchmarks.soak_app"
ENGINES = {"celery": soak_app.soak_celery, "rq": soak_app.soak_rq}


class Full:
    """The private Redis, its workers, an API and a runtime of this process."""

    def __init__(self, tmp: Path) -> None:
        from taskrouter.backends.runtime import Runtime
        from taskrouter.settings import Settings

        self.server = Server(maxmemory="0", policy="noeviction")
        # STACK_PREFIX: RQ reads its key prefix once per process (tests/conftest.py).
        self.env = worker_env(self.server.url, STACK_PREFIX, write_policy(tmp, "1h"))
        self.runtime = Runtime.from_env(Settings.from_env(self.env))
        self.tmp = tmp
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.api: subprocess.Popen[bytes] | None = None
        self.api_url = f"http://127.0.0.1:{free_port()}"

    @property
    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, decode_responses=True)

    def start(self) -> None:
        from taskrouter.backends.heartbeats import WorkerRegistry
        from taskrouter.services.processes import cli_command

        self.server.start()
        for engine in ENGINES:
            log = open(self.tmp / f"{engine}.log", "ab")  # noqa: SIM115 - lives with the process
            args = ["worker", "--app", APP, "--backend", engine, "--concurrency", "2"]
            self.workers[engine] = subprocess.Popen(
                cli_command(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        registry = WorkerRegistry(self.runtime.store)
        poll(lambda: registry.alive("celery") and registry.alive("rq"), 60, "the workers")
        log = open(self.tmp / "api.log", "ab")  # noqa: SIM115 - lives with the process
        port = self.api_url.rsplit(":", 1)[1]
        self.api = subprocess.Popen(
            cli_command("api", "--app", APP, "--port", port),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        poll(self._api_up, 30, "the API")

    def _api_up(self) -> bool:
        assert self.api is not None
        if self.api.poll() is not None:
            pytest.fail(f"the API exited: {self.log('api')}")
        try:
            return httpx.get(self.api_url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def fill(self) -> None:
        """Set maxmemory a little above what Redis holds, then write filler until Redis
        refuses writes."""
        client = self.client
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used + 2 * 1024 * 1024))
        chunk = "x" * 64 * 1024
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(10_000):
                client.set(f"filler:{i}", chunk)
        # The last write that got in took Redis just past the limit; a few KB freed by
        # chance (a client's buffer) would let the next one in. Full means full: the
        # limit goes below what Redis holds, until the filler is deleted.
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", str(used - 512 * 1024))

    def free(self) -> None:
        client = self.client
        for key in client.scan_iter(match="filler:*", count=1000):
            client.delete(key)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.api] if self.api else [])]
        stop_all(procs)
        self.runtime.close()
        self.server.stop()


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Full]:
    from taskrouter import _runtime

    f = Full(tmp_path_factory.mktemp("full"))
    previous = _runtime.install(f.runtime)
    try:
        f.start()
        yield f
    finally:
        f.stop()
        _runtime.install(previous)


def records_and_indexes(client: redis.Redis) -> tuple[set[str], set[str]]:
    """The job ids that have a record, and those in any index."""
    prefix = STACK_PREFIX
    records = {k.rsplit(":", 1)[1] for k in client.scan_iter(match=f"{prefix}:job:*")}
    indexed: set[str] = set()
    for key in client.scan_iter(match=f"{prefix}:idx:*"):
        indexed.update(client.zrange(key, 0, -1))
    return records, indexed


def test_a_full_redis_refuses_new_jobs_clearly_and_running_jobs_end_truly(full: Full) -> None:
    running = {e: [fn.enqueue(i, False, 3.0) for i in range(2)] for e, fn in ENGINES.items()}
    queued = {e: [fn.enqueue(10 + i) for i in range(3)] for e, fn in ENGINES.items()}
    poll(
        lambda: all(j.refresh().state == "running" for js in running.values() for j in js),
        30,
        "the slow jobs to start",
    )
    full.fill()
    before = records_and_indexes(full.client)
    for engine, fn in ENGINES.items():
        with pytest.raises(StorageFull, match="out of memory") as refused:
            fn.enqueue(99)
        assert "maxmemory" in str(refused.value), engine
        # An idempotency key is not left taken by the refused job.
        with pytest.raises(StorageFull):
            fn.using(idempotency_key=f"full-{engine}").enqueue(98)
    with httpx.Client(base_url=full.api_url, timeout=30) as http:
        r = http.post("/jobs", json={"task": "soak.rq", "args": [1]})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert "out of memory" in r.json()["detail"]
        r = http.post("/jobs", json={"task": "soak.celery", "args": [1]})
        assert r.status_code == 503, r.text
    # Nothing half written: no new record, no index entry without its record.
    after = records_and_indexes(full.client)
    assert after == before
    assert after[1] <= after[0]
    # The slow jobs' sleep ends while Redis is full: their ends are written (or tried
    # again) against the full Redis before memory is freed. Time must pass here, so
    # this waits for it: nothing to poll for.
    started = max(j.started_at or 0.0 for js in running.values() for j in js) / 1000
    time.sleep(max(0.0, started + 3.0 + 1.5 - time.time()))
    # Their ends were written while Redis was still full (finish.lua's first write is a
    # removal, which Redis does not refuse).
    assert full.client.info("memory")["used_memory"] > int(
        full.client.config_get("maxmemory")["maxmemory"]
    )
    for job in (j for js in running.values() for j in js):
        assert job.refresh().state == "succeeded", (job.backend, job.state)
    full.free()
    every = [j for js in (*running.values(), *queued.values()) for j in js]

    def ended() -> bool:
        return all(j.refresh().finished for j in every)

    poll(ended, 90, "every job to end once memory is free")
    for job in every:
        # A lease that lapsed while Redis refused its renewal is not a dead worker: the
        # janitor reaps only after Redis has taken writes for a whole lease again, by
        # when the worker has renewed it. So each job ran once, to its true end.
        assert (job.state, job.attempts) == ("succeeded", 1), (job.id, job.backend, job.error)
    # The workers never restarted (not even the RQ worker processes of the pool, which
    # RQ's own worker loop would end at the first write Redis refused), and new jobs run
    # on both engines.
    for engine, proc in full.workers.items():
        assert proc.poll() is None, full.log(engine)
    rq_log = (full.tmp / "rq.log").read_text()
    assert "exited with" not in rq_log and "quitting" not in rq_log, rq_log[-4000:]
    assert "Redis is out of memory" in rq_log  # it did meet a full Redis
    assert "unexpected error answering" not in full.log("api")
    fresh = [fn.enqueue(100) for fn in ENGINES.values()]
    fresh += [fn.using(idempotency_key=f"full-{e}").enqueue(100) for e, fn in ENGINES.items()]
    for job in fresh:
        assert job.wait(timeout=60) == 100


def test_readyz_and_up_warn_of_a_policy_that_evicts_job_records(full: Full) -> None:
    from taskrouter.services.processes import cli_command
    from tests.integration.conftest import worker_env as stack_env

    with httpx.Client(base_url=full.api_url, timeout=30) as http:
        # Ready again once every worker has beaten since the full Redis of the test above.
        body = poll(lambda: (b := http.get("/readyz").json())["ready"] and b, 30, "ready")
        assert body["warnings"] == [], body
        full.client.config_set("maxmemory", str(512 * 1024 * 1024))
        full.client.config_set("maxmemory-policy", "allkeys-lru")
        try:
            r = http.get("/readyz")
            body = r.json()
            # Still ready (it works), with the warning beside the checks.
            assert r.status_code == 200 and body["ready"] is True, body
            (warning,) = body["warnings"]
            assert "allkeys-lru" in warning and "noeviction" in warning, warning
            # `taskrouter up` says the same at its start (an app whose RQ worker gives
            # up at once, so that up stops by itself).
            env = stack_env(full.server.url, f"{STACK_PREFIX}-up", CRASH_MODE="rq")
            up = cli_command("up", "--app", "tests.integration.crash_app", "--port", "0")
            done = subprocess.run(
                up, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
            )
            assert "warning: Redis has maxmemory" in done.stderr, done.stderr[-3000:]
            assert "maxmemory-policy allkeys-lru" in done.stderr
            # ... and so does each worker in its log (up passes their output on).
            worker_says = "taskrouter.worker: Redis has maxmemory"
            assert worker_says in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
        finally:
            full.client.config_set("maxmemory-policy", "noeviction")
            full.client.config_set("maxmemory", "0")
        assert http.get("/readyz").json()["warnings"] == []
