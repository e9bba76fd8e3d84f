"""The HTTP API in process, on a fake runtime: no Redis, no engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from taskrouter import task
from taskrouter.backends.queries import (
    Cursor,
    Figures,
    Finished,
    InvalidQuery,
    JobFilter,
    Labels,
    list_jobs,
)
from taskrouter.derive import derive
from taskrouter.errors import (
    BackendError,
    BackendUnavailable,
    DamagedRecord,
    JobNotFound,
    JobStateConflict,
    PayloadError,
    TaskNotRegistered,
    TaskrouterError,
)
from taskrouter.keys import Keys
from taskrouter.policy_file import load_policy
from taskrouter.registry import CallOptions
from taskrouter.services.api import create_app, metrics
from taskrouter.services.api.auth import check_bind, default_allowed_hosts, is_loopback
from taskrouter.services.api.errors import status_of
from taskrouter.settings import Settings

POLICY = Path(__file__).resolve().parents[1] / "integration" / "policy.yaml"
TOKEN = "unit-token"


@task(profile="quick", name="unit.api.echo")
def echo(value: Any) -> Any:
    return value


RECORD = {
    "id": "01a20c3f51148717acfc743942c0",
    "task": "unit.api.echo",
    "profile": "quick",
    "backend": "celery",
    "queue": "quick",
    "state": "queued",
    "attempts": "0",
    "created_at": "1700000000123",
}


class FakeClient:
    def zrange(self, *args: Any, **kwargs: Any) -> list[str]:
        return ["celery|w1", "rq|w2"]  # WorkerRegistry.alive: one live worker per engine

    def mget(self, keys: list[str]) -> list[None]:
        return [None] * len(keys)  # heartbeats without details

    def info(self, section: str) -> dict[str, Any]:
        return {"maxmemory": 0, "maxmemory_policy": "noeviction"}  # /readyz's warnings

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline()


class FakePipeline:
    """Run time sketches and routes (GET /profiles): none observed yet."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def lrange(self, *args: Any) -> None:
        self.calls.append("lrange")

    def hgetall(self, *args: Any) -> None:
        self.calls.append("hgetall")

    def smembers(self, *args: Any) -> None:
        self.calls.append("smembers")

    def execute(self) -> list[Any]:
        empty: dict[str, Any] = {"lrange": [], "hgetall": {}, "smembers": set()}
        return [empty[call] for call in self.calls]


class FakeStore:
    keys = Keys("unit")
    client = FakeClient()

    @staticmethod
    def clock() -> int:
        return 1_700_000_000_000

    def ping(self) -> None:
        pass

    def paused(self, profiles: list[str]) -> dict[str, str | None]:
        return dict.fromkeys(profiles)

    def spent_many(self, wanted: list[tuple[str, Any, str | None]]) -> list[float]:
        return [0.0 for _ in wanted]

    def running_progress(self, limit: int) -> list[tuple[str, float | None]]:
        # Three running jobs of "quick" (one reported nothing) and one of "long".
        return [("quick", 0.2), ("quick", 0.8), ("quick", None), ("long", 1.0)]


class FakeBackend:
    def __init__(self, depths: dict[str, int] | Exception) -> None:
        self.depths = depths

    def ping(self) -> None:
        if isinstance(self.depths, Exception):
            raise self.depths

    def queue_depths(self) -> dict[str, int]:
        if isinstance(self.depths, Exception):
            raise self.depths
        return self.depths


class FakeRoutes:
    def reads(self, profile: str) -> bool:
        return False  # no adaptive profile in the test policy


class FakeRuntime:
    """What the API uses of Runtime; each operation returns or raises what a test sets."""

    def __init__(self, **outcomes: Any) -> None:
        self.settings = Settings(redis_url="redis://127.0.0.1:1/0")
        self.derived = derive(load_policy(str(POLICY)))
        self.store = FakeStore()
        self.celery = FakeBackend({"quick": 3})
        self.rq = FakeBackend({"long": 1})
        self.backends = {"celery": self.celery, "rq": self.rq}
        self.routes = FakeRoutes()
        self.outcomes = outcomes
        self.calls: list[tuple[Any, ...]] = []

    def _outcome(self, name: str, *args: Any) -> Any:
        self.calls.append((name, *args))
        value = self.outcomes.get(name, dict(RECORD))
        if isinstance(value, BaseException):
            raise value
        return value

    def plan(self, t: Any, args: tuple[Any, ...], kwargs: Any, options: CallOptions) -> Any:
        return ("enqueue", t.name, args, kwargs, options)

    def backend(self, name: str) -> FakeBackend:
        return self.backends[name]

    def refuses_over_budget(self, planned: Any) -> bool:
        return False

    def fast_message(self, planned: Any) -> None:
        return None  # no learned message: POST /jobs submits through the thread pool

    def submit(self, planned: Any, *, maybe_written: bool = False) -> Any:
        from taskrouter.job import Job

        return Job.from_record(self._outcome(*planned))

    def cancel_job(self, job_id: str) -> dict[str, str]:
        return {**self._outcome("cancel", job_id), "state": "canceled"}  # type: ignore[dict-item]

    def retry_job(self, job_id: str) -> Any:
        from taskrouter.job import Job

        return Job.from_record(self._outcome("retry", job_id))


def client_for(
    runtime: FakeRuntime, token: str | None = None, **kwargs: Any
) -> Iterator[TestClient]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", api_token=token)
    # TestClient sends Host: testserver, which a token-less API refuses unless allowed.
    kwargs.setdefault("allowed_hosts", ["testserver"])
    app = create_app(settings, runtime, **kwargs)  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def http(runtime: FakeRuntime) -> Iterator[TestClient]:
    yield from client_for(runtime)


# -- submit ------------------------------------------------------------------------------------


def test_submit_passes_task_arguments_and_options_apart(
    http: TestClient, runtime: FakeRuntime
) -> None:
    body = {"task": "unit.api.echo", "args": [1, [2]], "kwargs": {"job_timeout": 3}}
    r = http.post("/jobs", json={**body, "idempotency_key": "k1"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{RECORD['id']}"
    assert r.json()["created_at"] == "2023-11-14T22:13:20.123Z"
    name, task_name, args, kwargs, options = runtime.calls[0]
    assert (name, task_name, args, kwargs) == (
        "enqueue",
        "unit.api.echo",
        (1, [2]),
        {"job_timeout": 3},
    )
    assert options == CallOptions(idempotency_key="k1")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BackendUnavailable("celery broker", "connection refused"), 503),
        (PayloadError("argument 0 is the float nan"), 422),
        (JobStateConflict("no"), 409),
        (JobNotFound("x"), 404),
    ],
)
def test_router_errors_map_to_their_status(error: Exception, status: int) -> None:
    for http in client_for(FakeRuntime(enqueue=error)):
        r = http.post("/jobs", json={"task": "unit.api.echo"})
        assert r.status_code == status
        assert r.json() == {"detail": str(error)}
        if status == 503:
            assert "celery broker" in r.json()["detail"] and r.headers["retry-after"]


def test_anything_else_is_a_json_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    for http in client_for(FakeRuntime(retry=RuntimeError("bug"))):
        r = http.post("/jobs/x/retry")
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error (RuntimeError); see the server log"}
    assert "unexpected error answering POST /jobs/x/retry" in caplog.text


def test_unknown_task_is_404_before_the_runtime(http: TestClient, runtime: FakeRuntime) -> None:
    r = http.post("/jobs", json={"task": "unit.api.nope"})
    assert r.status_code == 404 and "unit.api.nope" in r.json()["detail"]
    assert runtime.calls == []


@pytest.mark.parametrize(
    ("content", "loc"),
    [
        (b'{"task": "unit.api.echo", "args": [1,', ["body", 37]),
        (b'{"task": "unit.api.echo", "args": {}}', ["body", "args"]),
        (b'{"task": "unit.api.echo", "kwargs": {"a": "\\udfff"}}', ["body", "kwargs"]),
        (b'{"task": "unit.api.echo", "idempotency_key": "' + b"k" * 201 + b'"}', None),
        (b'{"task": "\xff"}', ["body"]),  # not UTF-8
        (b"[" * 100_000, ["body"]),  # nested too deeply to parse
    ],
)
def test_invalid_bodies_are_422_with_the_field(
    http: TestClient, runtime: FakeRuntime, content: bytes, loc: list[Any] | None
) -> None:
    r = http.post("/jobs", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    issues = r.json()["detail"]
    assert set(issues[0]) == {"loc", "msg", "type"}  # never the input echoed back
    assert issues[0]["loc"] == (loc or ["body", "idempotency_key"])
    assert runtime.calls == []


# -- read, list, cancel, retry ----------------------------------------------------------------


@pytest.mark.parametrize("depth", [101, 950, 990, 5000])
def test_arguments_nested_past_the_codecs_limit_are_422_before_the_runtime(
    http: TestClient, runtime: FakeRuntime, depth: int
) -> None:
    deep = "[" * depth + "]" * depth
    for body in (f'{{"task": "unit.api.echo", "args": [{deep}]}}',
                 f'{{"task": "unit.api.echo", "kwargs": {{"x": {deep}}}}}'):  # fmt: skip
        r = http.post("/jobs", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text[:200]
        assert "at most 100 levels" in r.json()["detail"][0]["msg"]
    assert runtime.calls == []


def test_cancel_and_retry_answer_the_job(http: TestClient, runtime: FakeRuntime) -> None:
    r = http.post("/jobs/abc/cancel")
    assert r.status_code == 200 and r.json()["state"] == "canceled"
    r = http.post("/jobs/abc/retry")
    assert r.status_code == 202 and r.headers["location"].startswith("/jobs/")
    assert [c[:2] for c in runtime.calls] == [("cancel", "abc"), ("retry", "abc")]


def test_listing_parameters_are_checked_before_any_read(http: TestClient) -> None:
    for query, field in (
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("state=done", "state"),
        ("backend=x", "backend"),
        ("cursor=%%%", "cursor"),
    ):
        r = http.get(f"/jobs?{query}")
        assert r.status_code == 422, query
        assert r.json()["detail"][0]["loc"] == ["query", field]


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(1700000000123, "01a20c3f51148717acfc743942c0")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "x", "MTp4Onk", Cursor(1, "a").encode()[:-2] + "!!"):
        with pytest.raises(InvalidQuery):
            Cursor.decode(bad)
    with pytest.raises(InvalidQuery):
        JobFilter(state="done")
    with pytest.raises(InvalidQuery):
        list_jobs(FakeStore(), limit=0)  # type: ignore[arg-type]


# -- limits, auth --------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_413_declared_or_chunked(runtime: FakeRuntime) -> None:
    for http in client_for(runtime, max_body_bytes=100):
        r = http.post("/jobs", json={"task": "unit.api.echo", "args": ["x" * 200]})
        assert r.status_code == 413 and r.json() == {"detail": "request body over 100 bytes"}

        def chunks() -> Iterator[bytes]:
            yield b'{"task": "unit.api.echo", "args": ["'
            yield b"x" * 200
            yield b'"]}'

        r = http.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        ok = http.post("/jobs", json={"task": "unit.api.echo", "args": [1]})
        assert ok.status_code == 202
    assert len(runtime.calls) == 1


def test_the_token_guards_everything_but_healthz(runtime: FakeRuntime) -> None:
    for http in client_for(runtime, token=TOKEN):
        assert http.get("/healthz").status_code == 200
        for path in ("/profiles", "/openapi.json", "/docs", "/metrics", "/readyz", "/jobs/x"):
            r = http.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/profiles", headers={"Authorization": "bearer " + TOKEN}).is_success
        assert http.get("/profiles", headers={"Authorization": "Bearer nope"}).status_code == 401
        schema = http.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert schema["paths"]["/healthz"]["get"]["security"] == []
        assert "401" not in schema["paths"]["/healthz"]["get"]["responses"]
        assert "401" in schema["paths"]["/jobs/{job_id}"]["get"]["responses"]


def test_cross_site_browser_writes_are_403(http: TestClient, runtime: FakeRuntime) -> None:
    for site in ("cross-site", "same-site"):
        r = http.post("/jobs/abc/cancel", headers={"Sec-Fetch-Site": site})
        assert r.status_code == 403
    assert http.post("/jobs/abc/cancel", headers={"Sec-Fetch-Site": "same-origin"}).is_success
    assert runtime.calls == [("cancel", "abc")]


def test_without_a_token_a_rebound_host_name_is_421_before_anything_runs(
    runtime: FakeRuntime,
) -> None:
    allowed = default_allowed_hosts("127.0.0.1", 8000)
    for http in client_for(runtime, allowed_hosts=allowed):
        for host in ("evil.example", "evil.example:8000", "127.0.0.1:8001", "localhost",
                     "127.0.0.1.evil.example:8000", "", "[::1]:8000"):  # fmt: skip
            r = http.post("/jobs/abc/cancel", headers={"Host": host})
            assert r.status_code == 421, host
            assert "--allowed-host" in r.json()["detail"]
            sent = {"task": "unit.api.echo", "args": [1]}
            assert http.post("/jobs", json=sent, headers={"Host": host}).status_code == 421
            assert http.get("/jobs/abc", headers={"Host": host}).status_code == 421
        assert runtime.calls == []
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000"):
            assert http.post("/jobs/abc/cancel", headers={"Host": host}).is_success, host
        # A liveness probe carries no secrets, and probes name the address they dial.
        assert http.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200


def test_allowed_hosts_take_a_port_or_any_port_or_everything(runtime: FakeRuntime) -> None:
    for allowed, host, ok in [
        (["api.example:8443"], "api.example:8443", True),
        (["api.example:8443"], "api.example:9000", False),
        (["api.example"], "api.example:9000", True),
        (["api.example"], "API.example", True),
        (["[::1]"], "[::1]:8000", True),
        (["*"], "anything.example:1", True),
    ]:
        for http in client_for(runtime, allowed_hosts=allowed):
            assert http.get("/profiles", headers={"Host": host}).is_success is ok, (allowed, host)


def test_with_a_token_the_token_decides_whatever_the_host(runtime: FakeRuntime) -> None:
    for http in client_for(runtime, token=TOKEN, allowed_hosts=[]):
        auth = {"Authorization": f"Bearer {TOKEN}", "Host": "api.example"}
        assert http.get("/profiles", headers=auth).is_success
        assert http.get("/profiles", headers={"Host": "api.example"}).status_code == 401


def test_a_token_less_app_answers_only_loopback_names_unless_told_otherwise(
    runtime: FakeRuntime,
) -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"), runtime)  # type: ignore[arg-type]
    with TestClient(app, base_url="http://localhost:8123") as http:
        assert http.get("/profiles").is_success
        assert http.get("/profiles", headers={"Host": "testserver"}).status_code == 421


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [("127.0.0.1", 8000, ["127.0.0.1:8000", "localhost:8000"]),
     ("localhost", 8000, ["127.0.0.1:8000", "[::1]:8000", "localhost:8000"]),
     ("::1", 9000, ["[::1]:9000", "localhost:9000"]),
     ("127.0.0.1", 80, ["127.0.0.1", "127.0.0.1:80", "localhost", "localhost:80"]),
     ("127.0.0.1", 0, ["127.0.0.1", "localhost"])],
)  # fmt: skip
def test_default_allowed_hosts_are_the_bound_address_and_localhost(
    host: str, port: int, allowed: list[str]
) -> None:
    assert default_allowed_hosts(host, port) == allowed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("127.0.0.2", True), ("0.0.0.0", False), ("10.0.0.1", False), ("api.example", False)],
)  # fmt: skip
def test_binding_beyond_loopback_needs_a_token_or_insecure(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    check_bind(host, "token", False)
    check_bind(host, None, True)
    if loopback:
        check_bind(host, None, False)
    else:
        with pytest.raises(TaskrouterError, match="--insecure"):
            check_bind(host, None, False)


def test_one_table_maps_every_router_error() -> None:
    assert status_of(TaskNotRegistered("t")) == 404
    assert status_of(JobNotFound("j")) == 404
    assert status_of(JobStateConflict("c")) == 409
    assert status_of(PayloadError("p")) == 422
    assert status_of(InvalidQuery("limit", "bad")) == 422
    assert status_of(BackendUnavailable("redis", "down")) == 503
    assert status_of(DamagedRecord("j", "no 'id' field")) == 409
    assert status_of(TaskrouterError("other")) is None  # the last-resort 500


# -- profiles, health, metrics -----------------------------------------------------------------


def test_profiles_and_health(http: TestClient, runtime: FakeRuntime) -> None:
    body = http.get("/profiles").json()
    assert [p["profile"] for p in body["profiles"]] == list(runtime.derived.profiles)
    quick = body["profiles"][0]
    assert quick["backend"] == "celery" and quick["rule"] == "latency" and quick["reason"]
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["missing"] == []
    assert ready.json()["warnings"] == []


def test_readyz_names_what_is_missing(runtime: FakeRuntime) -> None:
    runtime.celery.depths = BackendUnavailable("celery broker", "refused")
    for http in client_for(runtime):
        r = http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["missing"] == ["celery broker"]
        check = next(c for c in r.json()["checks"] if c["name"] == "celery broker")
        assert check == {"name": "celery broker", "ok": False, "detail": "refused"}


def _figures() -> Figures:
    echo = Labels("quick", "celery", "quick", "t.echo")
    return Figures(
        by_state={("quick", "queued"): 2, ("quick", "succeeded"): 5, ("gone", "failed"): 1},
        counters={("submitted", echo): 7, ("succeeded", echo): 5, ("odd", echo): 1},
        finished=[
            Finished(echo, queue_wait=0.003, run_time=0.2),
            Finished(echo, queue_wait=0.04, run_time=2.0),
            Finished(echo, queue_wait=None, run_time=None),
        ],
    )


def test_metrics_are_prometheus_text_from_one_collector(
    runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "figures", lambda store, profiles, recent: _figures())
    # What the adapter raises for an engine error that is not a lost connection (the
    # table of backends/errors.py maps every library error to taskrouter's).
    runtime.celery.depths = BackendError("celery broker", "WRONGTYPE")
    text = generate_latest(metrics.registry(runtime)).decode()  # type: ignore[arg-type]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    echo = (("backend", "celery"), ("profile", "quick"), ("queue", "quick"), ("task", "t.echo"))
    assert samples[("taskrouter_jobs_submitted_total", echo)] == 7
    assert families["taskrouter_jobs_failed"].type == "counter"  # present, even if empty
    assert not any(name.startswith("taskrouter_jobs_odd") for name in families)
    state = (("backend", "celery"), ("profile", "quick"), ("queue", "quick"), ("state", "queued"))
    assert samples[("taskrouter_jobs", state)] == 2
    gone = (("backend", ""), ("profile", "gone"), ("queue", ""), ("state", "failed"))
    assert samples[("taskrouter_jobs", gone)] == 1  # a profile the policy no longer has
    run = families["taskrouter_job_run_seconds"]
    buckets = {s.labels["le"]: s.value for s in run.samples if s.name.endswith("_bucket")}
    assert (buckets["0.1"], buckets["0.25"], buckets["2.5"], buckets["+Inf"]) == (0, 1, 2, 2)
    wait = families["taskrouter_job_queue_wait_seconds"]
    wait_buckets = {s.labels["le"]: s.value for s in wait.samples if s.name.endswith("_bucket")}
    assert (wait_buckets["0.005"], wait_buckets["0.05"]) == (1, 2)
    assert samples[("taskrouter_queue_depth", (("backend", "rq"), ("queue", "long")))] == 1
    assert samples[("taskrouter_up", (("component", "celery broker"),))] == 0
    assert samples[("taskrouter_workers", (("backend", "rq"), ("lane", "fork")))] == 1
    progress = families["taskrouter_running_progress"]
    quick = {
        s.labels["le"]: s.value
        for s in progress.samples
        if s.name.endswith("_bucket") and s.labels["profile"] == "quick"
    }
    assert (quick["0.1"], quick["0.25"], quick["0.75"], quick["0.9"], quick["+Inf"]) == (
        0,
        1,
        1,
        2,
        2,
    )
    assert samples[("taskrouter_running_progress_gcount", (("profile", "long"),))] == 1


# -- the command's options ---------------------------------------------------------------------


def test_up_passes_allowed_hosts_on_to_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from click.testing import CliRunner

    from taskrouter.services import up
    from taskrouter.services.cli import main

    spawned: list[list[str]] = []

    class Exited:
        returncode = 0

        def poll(self) -> int:
            return 0  # every child "exits" at once: up stops

    def spawn(args: list[str], env: Any) -> Exited:
        spawned.append(args)
        return Exited()

    monkeypatch.setattr(up, "spawn", spawn)
    monkeypatch.setattr(up, "stop", lambda proc, timeout: None)
    monkeypatch.setattr(up, "resolve_redis", lambda url, force_embedded: ("redis://x:1/0", None))
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        args = ["up", "--app", "m", "--allowed-host", "a.example", "--allowed-host", "b:81"]
        CliRunner().invoke(main, args)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    [api] = [a for a in spawned if a[0] == "api"]
    assert api[-4:] == ["--allowed-host", "a.example", "--allowed-host", "b:81"]
