"""Adaptive routing (``routing.adaptive``) against real workers of both engines: a
profile declared short whose task takes 2 s moves to RQ after a few runs, and back to
Celery's prefork lane once it runs fast, each switch once; every job sent before, during
and after a switch runs exactly once on the engine it was sent to."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskrouter.backends.heartbeats import WorkerRegistry
from taskrouter.services.processes import stop_all
from tests.conftest import RUN_PREFIX, delete_prefix
from tests.integration.conftest import ROOT, cli, poll, worker_env
from tests.integration.test_api import ApiServer

pytestmark = pytest.mark.integration

APP = "tests.integration.adaptive_app"
# Three runs decide; the p90 must fall under 500 ms (long_after 1 s less the 50% band) to
# come back; a switch holds for 1 s at least.
POLICY = """\
version: 1
routing:
  long_after: 1s
  adaptive: {min_samples: 3, band: 50%, dwell: 1s}
defaults: {timeout: 20s, keep_results: 1h}
profiles:
  adaptive: {expected_latency: 100ms, queue: adaptive-q, timeout: 20s}
  chat: {expected_latency: 100ms, kind: io, queue: chat, timeout: 20s}
  waits: {expected_latency: 100ms, queue: waits, timeout: 20s}
"""
SLOW, FAST = 2.0, 0.01


class Stack:
    """A Celery prefork worker, an RQ worker and the API, on a key prefix of their own."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.prefix = f"{RUN_PREFIX}-adapt"
        self.tmp = tmp
        policy = tmp / "policy.yaml"
        policy.write_text(POLICY)
        self.env = worker_env(redis_url, self.prefix, TASKROUTER_POLICY=str(policy))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_url = redis_url
        from taskrouter.backends.store import JobStore

        self.store = JobStore.from_url(redis_url, self.prefix)

    def start(self, engine: str, lane: str = "", queues: str = "") -> None:
        name = lane or engine + (f"-{queues}" if queues else "")
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        which = ["--lane", lane] if lane else ["--backend", engine]
        which += ["--queues", queues] if queues else []
        args = ["worker", "--app", APP, *which, "--concurrency", "4"]
        proc = subprocess.Popen(
            cli(*args), env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.procs.append(proc)
        registry = WorkerRegistry(self.store)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{name} worker exited: {self.log(name)}")
            return any(n.endswith(f":{proc.pid}") for n in registry.alive(engine))

        poll(up, 60, f"the {name} worker", interval=0.1)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self) -> None:
        stop_all(self.procs)


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(redis_url, tmp_path_factory.mktemp("adapt"))
    try:
        s.start("celery")
        s.start("rq", queues="adaptive-q")  # not waits: its own test starts that one
        s.start("celery", lane="io")
        yield s
    finally:
        s.stop()
        s.store.close()
        delete_prefix(redis_url, s.prefix)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    server = ApiServer(stack.env, stack.tmp / "api.log", "--app", APP)
    try:
        with server.client() as client:
            yield client
    finally:
        server.stop()


def submit(api: httpx.Client, seconds: float, task: str = "adapt.work") -> dict[str, Any]:
    marker = uuid.uuid4().hex
    r = api.post("/jobs", json={"task": task, "args": [seconds, marker]})
    assert r.status_code == 202, r.text
    return {**r.json(), "marker": marker}


def route(api: httpx.Client, name: str = "adaptive") -> dict[str, Any]:
    (profile,) = [p for p in api.get("/profiles").json()["profiles"] if p["profile"] == name]
    return profile


def lane_of(api: httpx.Client, name: str = "adaptive") -> str:
    adaptive = route(api, name)["observed"]["adaptive"]
    return str(adaptive["lane"])


def all_done(stack: Stack, jobs: list[dict[str, Any]], timeout: float) -> list[dict[str, str]]:
    def finished() -> list[dict[str, str]] | None:
        records = [stack.store.read(j["id"]) or {} for j in jobs]
        if all(r.get("state") in ("succeeded", "failed", "canceled") for r in records):
            return records
        return None

    return poll(finished, timeout, f"{len(jobs)} jobs to finish", interval=0.2)


def assert_each_ran_once(stack: Stack, jobs: list[dict[str, Any]], timeout: float) -> None:
    records = all_done(stack, jobs, timeout)
    states = {(j["id"], r["backend"]): r["state"] for j, r in zip(jobs, records, strict=True)}
    assert set(states.values()) == {"succeeded"}, states
    assert {r["attempts"] for r in records} == {"1"}
    runs = stack.store.client.hgetall(f"{stack.prefix}:test-runs")
    assert [runs.get(j["marker"]) for j in jobs] == ["1"] * len(jobs)


def switches(stack: Stack, profile: str = "adaptive") -> dict[str, int]:
    counters = stack.store.client.hgetall(stack.store.keys.counters())
    return {
        name.split("|", 1)[0]: int(value)
        for name, value in counters.items()
        if name.startswith("switched_to_") and name.split("|")[1] == profile
    }


def test_a_short_profile_that_runs_long_moves_to_rq_and_back_once_each(
    stack: Stack, api: httpx.Client
) -> None:
    before = route(api)
    assert (before["backend"], before["observed"]["adaptive"]["lane"]) == ("celery", "prefork")
    assert "fewer than the 3 that routing.adaptive needs" in before["reason"]

    # Six slow jobs on four prefork processes: two still wait in Celery's queue when the
    # first four have run and the janitor moves the profile.
    first = [submit(api, SLOW) for _ in range(6)]
    assert {j["backend"] for j in first} == {"celery"}
    poll(lambda: lane_of(api) == "fork", 30, "the switch to RQ", interval=0.1)
    moved = route(api)
    assert moved["backend"] == "rq"
    assert moved["reason"].startswith("observed p90 2"), moved["reason"]
    assert ">= long_after 1s" in moved["reason"]

    # Jobs sent while the API still holds the old route go to Celery; then to RQ.
    during: list[dict[str, Any]] = []

    def sent_to_rq() -> bool:
        during.append(submit(api, SLOW))
        return during[-1]["backend"] == "rq"

    poll(sent_to_rq, 10, "a job sent to RQ", interval=0.2)
    during += [submit(api, SLOW) for _ in range(2)]
    assert {j["backend"] for j in first[-2:]} == {"celery"}  # sent before the switch
    assert {j["backend"] for j in during[-3:]} == {"rq"}
    assert_each_ran_once(stack, first + during, 60)
    assert switches(stack) == {"switched_to_fork": 1}

    # Fast runs push the p90 under 500 ms: back to the prefork lane, once.
    fast: list[dict[str, Any]] = []

    def back_on_prefork() -> bool:
        batch = [submit(api, FAST) for _ in range(20)]
        fast.extend(batch)
        all_done(stack, batch, 60)
        return lane_of(api) == "prefork"

    poll(back_on_prefork, 120, "the switch back to Celery", interval=0.3)
    more: list[dict[str, Any]] = []

    def sent_to_celery() -> bool:
        more.append(submit(api, FAST))
        return more[-1]["backend"] == "celery"

    poll(sent_to_celery, 10, "a job sent to Celery", interval=0.2)
    more += [submit(api, FAST) for _ in range(20)]
    assert {j["backend"] for j in more[-20:]} == {"celery"}
    assert_each_ran_once(stack, first + during + fast + more, 60)
    assert switches(stack) == {"switched_to_fork": 1, "switched_to_prefork": 1}
    assert route(api)["observed"]["adaptive"]["switches"] == 2

    text = api.get("/metrics").text
    assert 'taskrouter_route_switches_total{backend="rq",lane="fork",profile="adaptive"' in text

    page = api.get("/ui/profiles")
    assert page.status_code == 200
    assert '<div class="adaptive" data-lane="prefork" data-switches="2">' in page.text
    assert "adaptive routing: <strong>prefork lane</strong>" in page.text


def test_advise_prints_the_observed_figures_and_the_edit(stack: Stack) -> None:
    out = subprocess.run(
        cli("policy", "advise", "--json"),
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(out.stdout)["adaptive"]
    assert seen["observed"]["count"] > 20
    assert seen["observed"]["p50"] < 0.5 < 2 <= seen["observed"]["p95"] + 2
    assert (seen["observed_backend"], seen["observed_lane"]) == ("celery", "prefork")
    assert seen["edit"] == ""  # it routes as declared again
    assert seen["adaptive"]["switches"] == 2
    (task,) = seen["tasks"]
    assert (task["task"], task["count"]) == ("adapt.work", seen["observed"]["count"])


def test_a_short_io_profile_that_runs_long_moves_to_the_io_lane_on_a_queue_of_its_own(
    stack: Stack, api: httpx.Client
) -> None:
    """Celery's prefork and I/O lanes cannot share a queue: on the lane its declared
    latency does not choose, the profile's queue is <queue>-io, which only the I/O lane's
    workers consume."""
    first = [submit(api, SLOW, "adapt.chat") for _ in range(6)]
    assert {(j["backend"], j["queue"]) for j in first} == {("celery", "chat")}
    poll(lambda: lane_of(api, "chat") == "io", 30, "the switch to the I/O lane", interval=0.1)
    later: list[dict[str, Any]] = []

    def sent_to_the_lane() -> bool:
        later.append(submit(api, SLOW, "adapt.chat"))
        return later[-1]["queue"] == "chat-io"

    poll(sent_to_the_lane, 10, "a job sent to the I/O lane's queue", interval=0.2)
    later += [submit(api, SLOW, "adapt.chat") for _ in range(3)]
    assert {(j["backend"], j["queue"]) for j in later[-4:]} == {("celery", "chat-io")}
    assert_each_ran_once(stack, first + later, 60)
    workers = {r["worker"] for r in (stack.store.read(j["id"]) or {} for j in later[-4:])}
    lane_pid = str(stack.procs[-1].pid)  # the I/O lane worker ran every one of them
    assert {w.split(":", 1)[1].split("/")[0] for w in workers} == {lane_pid}, workers
    assert switches(stack, "chat") == {"switched_to_io": 1}


def test_a_switch_waits_for_a_worker_of_the_target_lane(stack: Stack, api: httpx.Client) -> None:
    """No RQ worker consumes the RQ queue of profile waits: however long its jobs run, it
    stays on Celery (its jobs run there) until one does, then moves."""
    first = [submit(api, SLOW, "adapt.wait") for _ in range(4)]
    assert_each_ran_once(stack, first, 60)
    poll(
        lambda: "no fork lane worker is alive" in route(api, "waits")["reason"],
        30,
        "the janitor to see that no RQ worker serves waits",
        interval=0.1,
    )
    assert lane_of(api, "waits") == "prefork"
    assert switches(stack, "waits") == {}
    stack.start("rq", queues="waits")
    poll(lambda: lane_of(api, "waits") == "fork", 30, "the switch to RQ", interval=0.1)
    later: list[dict[str, Any]] = []

    def sent_to_rq() -> bool:
        later.append(submit(api, FAST, "adapt.wait"))
        return later[-1]["backend"] == "rq"

    poll(sent_to_rq, 10, "a job of waits sent to RQ", interval=0.2)
    assert_each_ran_once(stack, first + later, 60)
    assert switches(stack, "waits") == {"switched_to_fork": 1}
