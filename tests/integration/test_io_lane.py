"""The I/O lane against real worker processes (``taskrouter worker --lane io``), real
Redis and a local slow HTTP server: hundreds of calls in flight in one process, the
death of that process, global limits across two of them, timeouts, cancel, a task that
blocks the event loop, and what holds on every lane (ghost copies, retries,
idempotency keys, per-step workflows)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskrouter import JobFailed, _runtime, chain
from taskrouter.registry import CallOptions
from taskrouter.services.processes import stop
from tests.conftest import RUN_PREFIX, delete_prefix
from tests.helpers import max_overlap
from tests.integration import lane_app as app
from tests.integration.conftest import ROOT, cli, poll, worker_env
from tests.integration.slow_http import SlowServer

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
routing: {long_after: 500ms, workflows: per-step}
defaults: {timeout: 20s, keep_results: 1h}
profiles:
  calls: {expected_latency: 1s, kind: io, queue: lane-calls, timeout: 40s, retries: {max: 1}}
  capped: {expected_latency: 1s, kind: io, queue: lane-capped, timeout: 20s, concurrency: 5}
  rated: {expected_latency: 1s, kind: io, queue: lane-capped, timeout: 20s, rate_limit: 3/2s}
  timed: {expected_latency: 1s, kind: io, queue: lane-calls, timeout: 1s}
  flaky: {expected_latency: 1s, kind: io, queue: lane-calls, retries: {max: 2, backoff: [200ms]}}
  keyed:
    expected_latency: 1s
    kind: io
    queue: lane-capped
    concurrency: 3
    per_key: {key: tenant, concurrency: 1}
    retry_after: {pause: key}
"""


class Lane:
    """Lane workers on a key prefix of their own, and a runtime to talk to them."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.prefix = f"{RUN_PREFIX}-lane"
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(POLICY)
        self.env = worker_env(redis_url, self.prefix, TASKROUTER_POLICY=str(self.policy))
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        from taskrouter.backends.runtime import Runtime
        from taskrouter.settings import Settings

        # This process has RQ's prefix of the session stack already (tests/conftest.py).
        settings = Settings.from_env(self.env)
        settings = Settings(
            redis_url=settings.redis_url,
            key_prefix=self.prefix,
            policy_path=str(self.policy),
            rq_key_prefix=os.environ["RQ_KEY_PREFIX"],
            celery_key_prefix=settings.celery_key_prefix,
            lease_ttl=settings.lease_ttl,
            janitor_interval=settings.janitor_interval,
        )
        self.runtime = Runtime.from_env(settings, engines=("celery",))

    def start(self, concurrency: int = 600, tag: str = "") -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"lane{tag}.log", "ab")  # noqa: SIM115 - lives with the process
        args = ["worker", "--app", "tests.integration.lane_app", "--lane", "io"]
        proc = subprocess.Popen(
            cli(*args, "--concurrency", str(concurrency)),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs.append(proc)
        from taskrouter.backends.heartbeats import WorkerRegistry

        registry = WorkerRegistry(self.runtime.store)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"lane worker exited: {self.log(tag)}")
            return any(n.endswith(f":{proc.pid}") for n in registry.alive("celery"))

        poll(up, 60, "the lane worker", interval=0.1)
        return proc

    def log(self, tag: str | None = None) -> str:
        """One worker's log, or every lane worker's."""
        paths = [self.tmp / f"lane{tag}.log"] if tag is not None else self.tmp.glob("lane*.log")
        return "".join(p.read_text() for p in paths if p.exists())

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        stop(proc, 30)


@pytest.fixture(scope="module")
def server() -> Iterator[SlowServer]:
    s = SlowServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def lane(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lane]:
    lane = Lane(redis_url, tmp_path_factory.mktemp("lane"))
    previous = _runtime.install(lane.runtime)
    try:
        lane.start()
        yield lane
    finally:
        for proc in lane.procs:
            lane.stop(proc)
        _runtime.install(previous)
        lane.runtime.close()
        delete_prefix(redis_url, lane.prefix)


def token() -> str:
    return uuid.uuid4().hex


def test_hundreds_of_async_and_sync_calls_wait_at_once_in_one_process(lane, server):
    server.reset()
    wait = 6.0
    started = time.monotonic()
    url = f"{server.url}/wait?s={wait}&g=many"
    jobs = [app.fetch.enqueue(f"{url}&id={token()}") for _ in range(300)]
    jobs += [app.fetch_sync.enqueue(f"{url}&id={token()}") for _ in range(100)]
    assert all(job.wait(60) == f"waited {wait:g}" for job in jobs)
    elapsed = time.monotonic() - started
    assert server.group_peak["many"] >= 350, server.group_peak  # at once, not in turn
    assert elapsed < 4 * wait, elapsed
    pids = {lane.runtime.store.read(j.id)["worker"].rsplit("/", 1)[1] for j in jobs}  # type: ignore[index]
    assert len(pids) == 1  # all in one process


def test_a_killed_lane_worker_holding_hundreds_of_calls_loses_none(lane, server):
    server.reset()
    for proc in lane.procs:
        lane.stop(proc)  # the victim alone takes every call
    victim = lane.start(tag="-victim")
    urls = [f"{server.url}/wait?s=30&then=0.05&g=victim&id={token()}" for _ in range(200)]
    jobs = [app.fetch.enqueue(u) for u in urls]
    poll(lambda: server.group_in_flight["victim"] >= 200, 30, "200 calls in the victim")
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.time()
    lane.start(tag="-after")  # as a process manager restarts it
    assert all(job.wait(60) == "waited 0.05" for job in jobs)
    for job in jobs:
        assert job.attempts == 2  # once killed, once again: each job ended exactly once
        assert job.history[0]["error"]["type"] == "WorkerLost"
        # lease 2 s + janitor pass 0.25 s (tests/integration/conftest.py), with slack
        assert job.history[0]["finished_at"] / 1000 - killed < 10
        assert job.state == "succeeded"
    assert max(server.seen.values()) == 2


def test_a_global_cap_holds_across_two_lane_workers(lane, server):
    server.reset()
    other = lane.start(tag="-second")
    try:
        url = f"{server.url}/wait?s=0.4&g=capped"
        jobs = [app.capped.enqueue(f"{url}&id={token()}") for _ in range(30)]
        assert all(job.wait(60) == "waited 0.4" for job in jobs)
    finally:
        lane.stop(other)
    assert 2 <= server.group_peak["capped"] <= 5, server.group_peak
    workers = {lane.runtime.store.read(j.id)["worker"].split("/")[0] for j in jobs}  # type: ignore[index]
    assert len(workers) == 2  # both workers took part


def test_a_rate_limit_spaces_starts_in_the_lane(lane):
    jobs = [app.rated.enqueue() for _ in range(6)]
    starts = sorted(job.wait(30) for job in jobs)
    assert starts[3] - starts[0] >= 1.8  # 3 per 2 s: the fourth waits for the window


def test_an_async_call_past_its_timeout_is_cancelled_with_type_timeout(lane, server):
    job = app.timed.enqueue(f"{server.url}/wait?s=10&id={token()}")
    with pytest.raises(JobFailed) as failed:
        job.wait(30)
    assert failed.value.type == "Timeout"
    assert job.finished_at - job.started_at < 4000  # type: ignore[operator]


def test_a_sync_call_past_its_timeout_fails_with_type_timeout(lane):
    job = app.timed_sync.enqueue(10)  # time.sleep: a C call, deaf to the interrupt
    with pytest.raises(JobFailed) as failed:
        job.wait(30)
    assert failed.value.type == "Timeout"
    # Recorded at the hard limit (timeout 1 s + 5 s grace), not when the sleep ends.
    assert job.finished_at - job.started_at < 8000  # type: ignore[operator]


def test_cancel_stops_a_running_async_call(lane, server):
    server.reset()
    tok = token()
    job = app.fetch.enqueue(f"{server.url}/wait?s=20&g=cancel&id={tok}")
    poll(lambda: server.seen[tok] == 1, 30, "the call to reach the server")
    job.cancel()
    assert job.state == "canceled"
    # The lane sees the revoke (or, at the latest, the next lease renewal) and cancels
    # the coroutine: its connection is closed before the server answers.
    poll(lambda: server.dropped[tok] == 1, 10, "the call to be cancelled")
    assert server.done[tok] == 0
    assert lane.runtime.get_job(job.id).state == "canceled"


def test_a_task_that_blocks_the_loop_is_named_and_holds_no_lease_back(lane, server):
    others = [app.fetch.enqueue(f"{server.url}/wait?s=0.5&id={token()}") for _ in range(20)]
    blocker = app.block.enqueue(3.0)  # longer than a lease (2 s)
    assert blocker.wait(30) == "blocked"
    assert all(job.wait(30) == "waited 0.5" for job in others)
    assert all(job.attempts == 1 for job in others)  # no lease lapsed meanwhile
    assert blocker.attempts == 1
    poll(lambda: f"blocked by lane.block[{blocker.id}]" in lane.log(), 10, "the warning")


def test_a_ghost_copy_of_a_running_lane_job_runs_nothing(lane, server):
    server.reset()
    tok = token()
    job = app.fetch.enqueue(f"{server.url}/wait?s=1&id={tok}")
    poll(lambda: server.seen[tok] == 1, 30, "the call to start")
    celery = lane.runtime.celery
    celery.app.send_task("lane.fetch", args=(job.id, 1), queue="lane-calls")
    assert job.wait(30) == "waited 1"
    assert server.seen[tok] == 1 and job.attempts == 1


def test_a_failed_call_is_retried_after_its_backoff(lane, server):
    job = app.flaky.enqueue(f"{server.url}/wait?s=0.05&then=0.06&id={token()}")
    assert job.wait(30) == "waited 0.06"
    assert job.attempts == 2
    assert job.history[0]["error"]["type"] == "ConnectionError"
    gap = job.history[1]["started_at"] - job.history[0]["finished_at"]
    assert gap >= 200  # the backoff


def test_an_idempotency_key_gives_one_job(lane, server):
    url = f"{server.url}/wait?s=0.1&id={token()}"
    first = app.fetch.using(idempotency_key=f"k-{token()}").enqueue(url)
    key = lane.runtime.store.read(first.id)["idempotency_key"]  # type: ignore[index]
    again = lane.runtime.enqueue(app.fetch, (url,), {}, CallOptions(idempotency_key=key))
    assert again.id == first.id
    assert first.wait(30) == "waited 0.1"


def test_a_per_step_chain_runs_in_the_lane(lane):
    run = chain(app.step.s(1, 2), app.step.s(10), app.step.s(100)).enqueue()
    assert run.wait(30) == 113
    assert {j.backend for j in run.jobs} == {"celery"}


def test_keyed_limits_retry_after_and_checkpoints_in_the_lane(lane):
    spans = f"{lane.prefix}:t:spans:{token()}"
    first = app.keyed.enqueue("t1", spans, True)  # RetryAfter 0.5 s once, pausing t1
    jobs = [first] + [app.keyed.enqueue(t, spans, False) for t in ("t1", "t2", "t3") * 3]
    assert all(job.wait(60) is None for job in jobs)
    by_tenant: dict[str, list[tuple[float, float]]] = {}
    for item in lane.runtime.store.client.lrange(spans, 0, -1):
        tenant, start, end = item.split(":")
        by_tenant.setdefault(tenant, []).append((float(start), float(end)))
    assert sorted(len(v) for v in by_tenant.values()) == [3, 3, 4]

    assert all(max_overlap(v) == 1 for v in by_tenant.values())  # per_key concurrency 1
    assert 2 <= max_overlap([s for v in by_tenant.values() for s in v]) <= 3  # global cap 3
    # The async task's RetryAfter used no attempt, and its checkpoint came back.
    assert first.attempts == 1 and first.checkpoints == {"waited": True}
    assert first.history[0]["error"]["type"] == "RetryAfter"
    # pause: key held tenant t1 for the 0.5 s, not t2 and t3.
    paused_until = first.history[0]["finished_at"] / 1000 + 0.5
    assert min(s for s, _ in by_tenant["t1"]) >= paused_until - 0.01
    assert min(s for s, _ in by_tenant["t2"]) < paused_until
