"""Flow control on real workers: progress and checkpoints, RetryAfter and pauses."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from taskrouter.services.api import create_app
from tests.integration import flow_app
from tests.integration.conftest import Stack, own_worker, poll

pytestmark = pytest.mark.integration


@pytest.fixture
def http(stack: Stack) -> Iterator[TestClient]:
    from taskrouter.settings import Settings

    app = create_app(Settings.from_env(stack.env), stack.runtime, allowed_hosts=["testserver"])
    with TestClient(app) as client:
        yield client


def _running(stack: Stack, job_id: str) -> dict[str, str] | None:
    record = stack.runtime.store.read(job_id)
    return record if record and record["state"] == "running" else None


def test_progress_and_checkpoints_show_in_the_api_while_the_job_runs(stack, http, tmp_path):
    release = tmp_path / "release"
    job = flow_app.report_progress.enqueue(str(release))

    def reported() -> dict | None:
        body = http.get(f"/jobs/{job.id}", params={"include": "flow"}).json()
        return body if body["flow"]["progress"] else None

    body = poll(reported, 30, "the progress report")
    assert body["state"] == "running"
    assert body["flow"]["progress"]["fraction"] == 0.5
    assert body["flow"]["progress"]["message"] == "page 5 of 10"
    assert body["flow"]["progress"]["at"].endswith("Z")
    assert body["flow"]["checkpoints"] == {"page": 5}
    # The contract's job JSON is unchanged without ?include=flow.
    assert "flow" not in http.get(f"/jobs/{job.id}").json()
    # /metrics: running jobs per profile by the progress they reported (no label per job).
    metrics = http.get("/metrics").text
    profile = body["profile"]
    assert f'taskrouter_running_progress_bucket{{le="0.25",profile="{profile}"}} 0.0' in metrics
    assert f'taskrouter_running_progress_bucket{{le="0.5",profile="{profile}"}} 1.0' in metrics
    assert f'taskrouter_running_progress_gcount{{profile="{profile}"}} 1.0' in metrics
    release.touch()
    assert job.wait(30) == "ok"
    assert job.progress["fraction"] == 0.5 and job.checkpoints == {"page": 5}


def test_unknown_include_is_refused(stack, http, tmp_path):
    job = flow_app.report_progress.enqueue(str(tmp_path))  # exists: no wait
    assert http.get(f"/jobs/{job.id}", params={"include": "flows"}).status_code == 422
    assert job.wait(30) == "ok"


@pytest.mark.parametrize(
    "engine, fn, queue",
    [
        ("rq", flow_app.pipeline_rq, "fault-rq"),
        ("celery", flow_app.pipeline_celery, "fault-celery"),
    ],
)
def test_checkpointed_job_killed_mid_run_resumes_at_its_checkpoint(
    stack, tmp_path, engine, fn, queue
):
    runs = f"{stack.prefix}:t:runs:{uuid.uuid4().hex}"
    marker = tmp_path / "marker"
    stall_at = 4
    with own_worker(stack, engine, [queue]):
        job = fn.enqueue(runs, str(marker), stall_at)
        record = poll(lambda: marker.exists() and _running(stack, job.id), 30, "step 4")
        assert job.refresh().progress["message"] == "step 3 of 6"
        os.kill(int(record["worker"].rsplit("/", 1)[1]), signal.SIGKILL)
        killed = time.monotonic()
        result = job.wait(30)
    billed = stack.runtime.store.client.lrange(runs, 0, -1)
    # Steps 1 to 3 were paid for once; the step the kill interrupted ran again.
    assert billed == ["1:1", "1:2", "1:3", "1:4", "2:4", "2:5", "2:6"], billed
    assert result == {"steps": [f"step{i}" for i in range(1, 7)], "attempt": 2}
    assert job.attempts == 2 and job.history[0]["error"]["type"] == "WorkerLost"
    assert job.checkpoints["step3"] == {"step": 3, "tokens": 300}
    assert job.progress["fraction"] == 1.0
    assert time.monotonic() - killed < 30


class Provider:
    """A paid API on 127.0.0.1: ``GET /<name>?tenant=T`` answers 429 with ``Retry-After``
    the first ``busy[name]`` times, then 200; every request is logged with its time."""

    def __init__(self) -> None:
        self.busy: dict[str, tuple[int, str | None]] = {}
        self.log: list[tuple[float, str, str, int]] = []  # time, name, tenant, status
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                name, tenant = url.path.strip("/"), parse_qs(url.query)["tenant"][0]
                with provider._lock:
                    left, header = provider.busy.get(name, (0, None))
                    status = 429 if left > 0 else 200
                    provider.busy[name] = (left - 1, header)
                    provider.log.append((time.time(), name, tenant, status))
                self.send_response(status)
                if status == 429 and header is not None:
                    self.send_header("Retry-After", header)
                body = b"slow down" if status == 429 else f"ok {name}".encode()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def calls(self, name: str) -> list[tuple[float, int]]:
        with self._lock:
            return [(t, status) for t, n, _, status in self.log if n == name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.close()


@pytest.mark.parametrize(
    "engine, fn, queue, client",
    [
        ("celery", flow_app.call_celery, "flow-celery", "httpx"),
        ("rq", flow_app.call_rq, "flow-rq", "requests"),
    ],
)
def test_http_429_pauses_the_key_and_resumes_it_on_time_using_no_attempt(
    stack, provider, engine, fn, queue, client
):
    tag = uuid.uuid4().hex[:8]
    first, same, other = f"a-{tag}", f"b-{tag}", f"c-{tag}"
    provider.busy[first] = (1, "2")  # one 429 with Retry-After: 2 s
    with own_worker(stack, engine, [queue], concurrency=2):
        job = fn.enqueue(f"{provider.url}/{first}", "t1", client)
        poll(lambda: stack.runtime.store.fields(job.id, "waiting")[0] == "retry_after", 30, "429")
        refused_at = provider.calls(first)[0][0]
        # The key is paused: the tenant's next job waits; another tenant's does not.
        waits = fn.enqueue(f"{provider.url}/{same}", "t1", client)
        free = fn.enqueue(f"{provider.url}/{other}", "t2", client)
        assert free.wait(30) == f"ok {other}"
        assert waits.refresh().state in ("queued", "scheduled")
        assert job.wait(30) == f"ok {first}" and waits.wait(30) == f"ok {same}"
    (_, status), (again, _) = provider.calls(first)
    assert status == 429
    assert provider.calls(other)[0][0] < refused_at + 1.5  # not held back by t1's pause
    # Nothing of tenant t1 reached the provider inside the 2 s it asked for, and both
    # came back soon after it (the schedule is looked at every 0.5 s).
    assert provider.calls(same)[0][0] >= refused_at + 1.9
    assert refused_at + 1.9 <= again < refused_at + 5, again - refused_at
    assert job.attempts == 1  # the wait used no attempt: both runs are attempt 1
    assert [h["attempt"] for h in job.history] == [1, 1]
    assert job.history[0]["error"]["type"] == "RetryAfter"
    assert "HTTP 429" in job.history[0]["error"]["message"]
    assert waits.attempts == 1 and "error" not in waits.history[0]


def test_retry_after_with_pause_profile_holds_the_whole_profile(stack):
    counter = f"{stack.prefix}:t:runs:{uuid.uuid4().hex}"
    other = f"{stack.prefix}:t:runs:{uuid.uuid4().hex}"
    with own_worker(stack, "celery", ["flow-celery"], concurrency=2):
        job = flow_app.wait_once.enqueue(counter, 2)
        poll(lambda: job.refresh().state == "scheduled", 30, "the RetryAfter")
        paused_at = time.time()
        limits = stack.runtime.store.keys.limits("flow_profile_pause")
        assert int(stack.runtime.store.client.hget(limits, "paused")) > paused_at * 1000
        second = flow_app.wait_once.enqueue(other, 0)  # would succeed at once
        poll(lambda: second.refresh().state == "scheduled", 30, "the second job to wait")
        assert stack.runtime.store.fields(second.id, "waiting")[0] == "paused"
        assert job.wait(30) == 2
        assert second.wait(30) == 1  # it never ran inside the pause...
    assert second.started_at / 1000 >= paused_at + 1.0  # ...which began before paused_at
    assert job.attempts == 1


def test_a_provider_that_never_lets_up_fails_the_job_after_max_waits(stack):
    with own_worker(stack, "celery", ["flow-celery"]):
        job = flow_app.always_later.using(limit_key=uuid.uuid4().hex).enqueue(0.1)
        with pytest.raises(Exception) as failed:
            job.wait(30)
    assert "RetryAfter" in str(failed.value)
    assert len(job.history) == 4  # max: 3 waits, then the fourth RetryAfter fails it
    assert job.attempts == 1


def test_a_budget_pauses_its_profile_and_resumes_it_in_the_next_window(stack):
    store, per = stack.runtime.store, 4000
    with own_worker(stack, "celery", ["flow-celery"], concurrency=2):
        # Start at the beginning of a window, so that the first two calls share it.
        poll(lambda: store.clock() % per < 200, per / 1000 + 1, "a window's start", 0.01)
        window_end = (store.clock() // per + 1) * per
        first, second = flow_app.spend.enqueue(0.6), flow_app.spend.enqueue(0.6)
        assert (first.wait(10), second.wait(10)) == (0.6, 0.6)
        third = flow_app.spend.enqueue(0.1)  # 1.2 of 1.0 spent: waits for the next window
        poll(lambda: store.fields(third.id, "waiting")[0] == "budget", 10, "the budget wait")
        assert third.refresh().state == "scheduled"
        assert third.wait(15) == 0.1
    assert first.spend == 0.6 and third.spend == 0.1  # in the job records
    assert window_end <= third.started_at < window_end + 1500


def test_a_budget_that_refuses_turns_enqueues_away_with_429(stack, http):
    from taskrouter import BudgetExceeded

    with own_worker(stack, "celery", ["flow-celery"]):
        assert flow_app.spend_refuse.enqueue(0.75).wait(10) == 0.75
        with pytest.raises(BudgetExceeded, match=r"spent 0\.75 of its budget of 0\.5"):
            flow_app.spend_refuse.enqueue(0.1)
        r = http.post("/jobs", json={"task": "t.flow_spend_refuse", "args": [0.1]})
        assert r.status_code == 429 and "budget" in r.json()["detail"]
        assert 0 < int(r.headers["Retry-After"]) <= 3600
        profiles = {p["profile"]: p for p in http.get("/profiles").json()["profiles"]}
        assert profiles["budget_refuse"]["spend"] == 0.75
        assert profiles["budget_refuse"]["budget"]["when_reached"] == "refuse"
        metrics = http.get("/metrics").text
        assert 'taskrouter_profile_spend{profile="budget_refuse"} 0.75' in metrics
        assert 'taskrouter_profile_budget{profile="budget_refuse"} 0.5' in metrics


def test_pause_and_resume_a_profile_by_hand_from_the_cli_and_the_api(stack, http):
    import subprocess

    from tests.integration.conftest import ROOT, cli

    def run(*args: str) -> str:
        done = subprocess.run(
            cli(*args), env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    with own_worker(stack, "celery", ["flow-celery"]):
        assert "paused" in run("pause", "budgeted")
        # The same queue and worker, another profile: not held.
        other = flow_app.wait_once.enqueue(f"{stack.prefix}:t:runs:{uuid.uuid4().hex}", 0)
        held = flow_app.spend.enqueue(0.0)
        assert other.wait(10) == 1
        poll(lambda: stack.runtime.store.fields(held.id, "waiting")[0] == "paused", 10, "hold")
        profiles = {p["profile"]: p for p in http.get("/profiles").json()["profiles"]}
        assert profiles["budgeted"]["paused"] == "manual"
        assert 'taskrouter_profile_paused{profile="budgeted"} 1.0' in http.get("/metrics").text
        assert profiles["quick"]["paused"] is None
        resumed = time.time()
        assert http.post("/profiles/budgeted/resume").json()["was_paused"] is True
        assert held.wait(10) == 0.0
        assert http.post("/profiles/budgeted/pause").json()["paused"] == "manual"
        assert "resumed" in run("resume", "budgeted")
        assert "was not paused" in run("resume", "budgeted")
        assert http.post("/profiles/nope/pause").status_code == 404
    assert held.started_at >= resumed * 1000  # it never started inside the pause


def test_a_budget_with_a_price_charges_the_declared_cost_at_start(stack):
    store, per = stack.runtime.store, 3_600_000
    if per - store.clock() % per < 20_000:  # a new window would start mid-test
        poll(lambda: store.clock() % per < per - 20_000, 30, "the next window", 0.5)
    with own_worker(stack, "celery", ["flow-celery"]):
        # price 0.001 per unit, limit 2.0: two calls of 1,000 units spend it all
        done = [flow_app.priced.using(cost=1000).enqueue(i) for i in range(2)]
        assert [job.wait(10) for job in done] == [0, 1]
        third = flow_app.priced.using(cost=1000).enqueue(2)
        poll(lambda: store.fields(third.id, "waiting")[0] == "budget", 10, "the budget wait")
        third.cancel()
    assert [job.spend for job in done] == [1.0, 1.0]
    budget = stack.runtime.derived.profiles["priced"].budget
    assert store.spent("priced", budget) == 2.0
