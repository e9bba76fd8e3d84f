"""The HTTP API end to end: a real server process (``taskrouter api``) on the session's
worker stack, real Celery and RQ workers, and plain HTTP from this process."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskrouter.services.processes import free_port
from tests.conftest import CONTRACT_JOB_FIELDS, RUN_PREFIX, delete_prefix
from tests.integration import app
from tests.integration.conftest import APP, ROOT, Stack, cli, poll, worker_env

pytestmark = pytest.mark.integration

TOKEN = "s3cret-" + uuid.uuid4().hex
FIELDS = set(CONTRACT_JOB_FIELDS)


class ApiServer:
    """``taskrouter api`` in a subprocess, with the environment of the stack's workers."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cli("api", "--app", APP, "--port", str(self.port), *args),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        poll(self._up, 30, f"the API on port {self.port}")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the API exited with {self.proc.returncode}: {self.output()}")
        try:
            return httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def output(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # No request may ever end in a 500: the last-resort handler logs each one.
        log = self.log.read_text()
        assert "unexpected error answering" not in log, log[-4000:]


def start_api(env: dict[str, str], log: Path, *args: str) -> Iterator[ApiServer]:
    server = ApiServer(env, log, *args)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API without a token, on the stack's key prefix."""
    log = tmp_path_factory.mktemp("api") / "api.log"
    yield from start_api(stack.env, log)


@pytest.fixture(scope="module")
def secured(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API with TASKROUTER_API_TOKEN set."""
    log = tmp_path_factory.mktemp("api") / "secured.log"
    env = {**stack.env, "TASKROUTER_API_TOKEN": TOKEN}
    yield from start_api(env, log)


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


def submit(http: httpx.Client, task: str, *args: Any, **body: Any) -> dict[str, Any]:
    r = http.post("/jobs", json={"task": task, "args": list(args), **body})
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    return job


def wait_state(http: httpx.Client, job_id: str, *states: str, timeout: float = 30) -> Any:
    def reached() -> Any:
        job = http.get(f"/jobs/{job_id}").json()
        return job if job["state"] in states else None

    return poll(reached, timeout, f"job {job_id} to be {' or '.join(states)}")


# -- health, docs, profiles ------------------------------------------------------------------


def test_healthz_and_readyz_with_workers_of_both_engines(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    r = http.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["missing"] == []
    names = {c["name"] for c in body["checks"]}
    assert names == {"redis", "celery broker", "celery workers", "rq workers"}


def test_openapi_docs_describe_every_endpoint(http: httpx.Client) -> None:
    assert "swagger" in http.get("/docs").text.lower()
    schema = http.get("/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/retry",
        "/profiles",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    assert "securitySchemes" not in schema.get("components", {})  # no token: none needed


def test_profiles_show_engine_reason_and_derived_settings(http: httpx.Client, stack: Stack):
    body = http.get("/profiles").json()
    derived = stack.runtime.derived
    got = {p["profile"]: p for p in body["profiles"]}
    assert list(got) == list(derived.profiles)
    for name, ps in derived.profiles.items():
        p = got[name]
        assert (p["backend"], p["queue"], p["reason"]) == (ps.backend, ps.queue, ps.reason)
        assert p["time_limit"] == ps.time_limit and p["max_attempts"] == ps.max_attempts
    assert got["quick"]["backend"] == "celery" and got["long"]["backend"] == "rq"
    assert body["celery_visibility_timeout"] == derived.visibility_timeout


# -- submit and read ---------------------------------------------------------------------------


def test_submit_runs_on_the_routed_engine_and_reads_back(http: httpx.Client) -> None:
    short = submit(http, "t.echo", {"n": 1})
    long = submit(http, "t.long_echo", kwargs={"value": [1, 2]})
    assert set(short) == FIELDS and short["state"] == "queued"
    assert (short["backend"], long["backend"]) == ("celery", "rq")
    done = wait_state(http, short["id"], "succeeded")
    assert done["result"] == {"n": 1} and done["attempts"] == 1 and done["queue"] == "quick"
    assert wait_state(http, long["id"], "succeeded")["result"] == [1, 2]


def test_consecutive_celery_posts_each_run_once(http: httpx.Client) -> None:
    # After a queue's first messages, POST /jobs writes the record and the message in one
    # round trip on the event loop (backends/aio.py).
    jobs = [submit(http, "t.echo", {"i": i}) for i in range(8)]
    for i, job in enumerate(jobs):
        done = wait_state(http, job["id"], "succeeded")
        assert (done["result"], done["attempts"], done["backend"]) == ({"i": i}, 1, "celery")


def test_read_is_the_record_the_runtime_sees(http: httpx.Client, stack: Stack) -> None:
    job = app.echo.enqueue("seen")
    job.wait(30)
    assert http.get(f"/jobs/{job.id}").json() == job.refresh().to_dict()


def test_idempotency_key_returns_the_first_job(http: httpx.Client) -> None:
    key = uuid.uuid4().hex
    first = submit(http, "t.echo", 1, idempotency_key=key)
    again = submit(http, "t.echo", 2, idempotency_key=key)
    assert again["id"] == first["id"]


# -- bad input: never a 500 -------------------------------------------------------------------


def _issues(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list)
    return detail


def test_unknown_task_is_404(http: httpx.Client) -> None:
    r = http.post("/jobs", json={"task": "t.nope"})
    assert r.status_code == 404 and "t.nope" in r.json()["detail"]


def test_malformed_json_and_wrong_types_are_422_naming_the_field(http: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    assert _issues(http.post("/jobs", content=b'{"task": ', headers=headers))[0]["loc"][0] == "body"
    locs = [i["loc"] for i in _issues(http.post("/jobs", json={"task": "t.echo", "args": "x"}))]
    assert locs == [["body", "args"]]
    locs = [i["loc"] for i in _issues(http.post("/jobs", json={"task": 5, "kwargs": []}))]
    assert locs == [["body", "task"], ["body", "kwargs"]]
    locs = [i["loc"] for i in _issues(http.post("/jobs", json={"task": "t.echo", "queue": "x"}))]
    assert locs == [["body", "queue"]]  # unknown fields are refused, never ignored
    assert _issues(http.post("/jobs", json={"args": []}))[0]["loc"] == ["body", "task"]
    r = http.post("/jobs", json={"task": "t.echo", "idempotency_key": ""})
    assert _issues(r)[0]["loc"] == ["body", "idempotency_key"]


def test_a_form_post_is_told_to_send_json(http: httpx.Client) -> None:
    issues = _issues(http.post("/jobs", data={"task": "t.echo"}))
    assert issues[0]["loc"] == ["header", "content-type"]


def test_arguments_the_codec_cannot_encode_are_422(http: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    r = http.post("/jobs", content=b'{"task": "t.echo", "args": [NaN]}', headers=headers)
    assert r.status_code == 422 and "argument 0" in r.json()["detail"]
    r = http.post("/jobs", content=b'{"task": "t.echo", "args": ["\\ud800"]}', headers=headers)
    assert _issues(r)[0]["loc"] == ["body", "args"]


def test_bodies_over_the_limit_are_413_declared_or_streamed(http: httpx.Client) -> None:
    big = json.dumps({"task": "t.echo", "args": ["x" * (1024 * 1024)]}).encode()
    r = http.post("/jobs", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "1048576" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"task": "t.echo", "args": ["'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"]}'

    r = http.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    small = submit(http, "t.echo", "x" * 1000)  # and the connection pool still works
    assert small["state"] == "queued"


def test_unknown_jobs_are_404_for_every_operation(http: httpx.Client) -> None:
    for method, path in (
        ("GET", "/jobs/nope"),
        ("POST", "/jobs/nope/cancel"),
        ("POST", "/jobs/nope/retry"),
    ):
        r = http.request(method, path)
        assert r.status_code == 404 and "nope" in r.json()["detail"], (method, path)


def test_bad_listing_parameters_are_422(http: httpx.Client) -> None:
    assert _issues(http.get("/jobs?cursor=garbage"))[0]["loc"] == ["query", "cursor"]
    assert _issues(http.get("/jobs?limit=0"))[0]["loc"] == ["query", "limit"]
    assert _issues(http.get("/jobs?state=lost"))[0]["loc"] == ["query", "state"]
    assert _issues(http.get("/jobs?backend=sidekiq"))[0]["loc"] == ["query", "backend"]


def test_cross_site_browser_posts_are_refused(http: httpx.Client) -> None:
    r = http.post("/jobs/any/cancel", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert http.get("/jobs?limit=1", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


# -- listing ---------------------------------------------------------------------------------


def _all_pages(http: httpx.Client, query: str, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        params = f"{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = http.get(f"/jobs?{params}").json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def test_listing_is_newest_first_and_filtered(http: httpx.Client, stack: Stack) -> None:
    jobs = [submit(http, "t.echo", i) for i in range(5)]
    page = http.get("/jobs?task=t.echo&limit=5").json()
    # Newest first: by creation time (ms), then id (random within one ms).
    assert {j["id"] for j in page["items"]} == {j["id"] for j in jobs}
    order = [(j["created_at"], j["id"]) for j in page["items"]]
    assert order == sorted(order, reverse=True)
    assert page["next_cursor"]
    long = submit(http, "t.long_echo", 0)
    items = http.get("/jobs?backend=rq&task=t.long_echo&profile=long&limit=1").json()["items"]
    assert [j["id"] for j in items] == [long["id"]]
    assert http.get("/jobs?backend=celery&task=t.long_echo").json() == {
        "items": [],
        "next_cursor": None,
    }
    assert http.get("/jobs?profile=no-such-profile").json()["items"] == []
    wait_state(http, long["id"], "succeeded")
    done = http.get("/jobs?state=succeeded&task=t.long_echo&limit=500").json()["items"]
    assert long["id"] in {j["id"] for j in done}
    assert all(j["state"] == "succeeded" for j in done)


@pytest.mark.parametrize(
    "query", ["task=t.echo", "profile=quick&backend=celery&task=t.echo"], ids=["one", "three"]
)
def test_paging_while_jobs_arrive_shows_each_earlier_job_once(
    http: httpx.Client, stack: Stack, query: str
) -> None:
    for i in range(40):
        app.echo.enqueue(i)
    store = stack.runtime.store
    indexed = store.client.zrange(store.keys.index("task", "t.echo"), 0, -1)
    pipe = store.client.pipeline()
    for job_id in indexed:
        pipe.exists(store.keys.job(job_id))
    before = {job_id for job_id, live in zip(indexed, pipe.execute(), strict=True) if live}
    stop = threading.Event()
    inserted: list[str] = []

    def insert() -> None:
        while not stop.is_set() and len(inserted) < 150:
            inserted.append(app.echo.enqueue("late").id)

    writer = threading.Thread(target=insert)
    writer.start()
    try:
        items = _all_pages(http, query, limit=7)
    finally:
        stop.set()
        writer.join()
    ids = [j["id"] for j in items]
    assert len(ids) == len(set(ids)), "a job was listed twice"
    assert before <= set(ids), f"{len(before - set(ids))} earlier jobs were skipped"
    assert inserted, "nothing was inserted while paging"
    order = [(j["created_at"], j["id"]) for j in items]
    assert order == sorted(order, reverse=True)


def test_listing_skips_jobs_whose_record_expired(http: httpx.Client, stack: Stack) -> None:
    jobs = [submit(http, "t.long_echo", i) for i in range(3)]
    for job in jobs:
        wait_state(http, job["id"], "succeeded")
    stack.runtime.store.client.delete(stack.runtime.store.keys.job(jobs[1]["id"]))
    items = http.get("/jobs?task=t.long_echo&limit=3").json()["items"]
    assert jobs[1]["id"] not in {j["id"] for j in items}
    assert {jobs[0]["id"], jobs[2]["id"]} <= {j["id"] for j in items}


def test_cli_jobs_uses_the_same_query(http: httpx.Client, stack: Stack) -> None:
    submit(http, "t.long_echo", "cli")
    query = {"task": "t.long_echo", "backend": "rq", "limit": "4"}
    out = subprocess.run(
        cli("jobs", "--task", "t.long_echo", "--backend", "rq", "--limit", "4", "--json"),
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    via_api = http.get("/jobs", params=query).json()
    assert [j["id"] for j in json.loads(out.stdout)["items"]] == [j["id"] for j in via_api["items"]]
    table = subprocess.run(
        cli("jobs", "--task", "t.long_echo", "--limit", "2"),
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "TASK", "PROFILE", "BACKEND", "STATE"]
    assert via_api["items"][0]["id"] in table.stdout
    assert "--cursor" in table.stdout


# -- cancel and retry -------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("engine", "sleeper", "toucher"),
    [("celery", "t.pid_sleep_celery", "t.touch"), ("rq", "t.pid_sleep_rq", "t.touch_rq")],
)
def test_cancel_stops_running_jobs_and_a_queued_job_never_runs(
    http: httpx.Client, tmp_path: Path, engine: str, sleeper: str, toucher: str
) -> None:
    # Occupy both worker processes of the engine, so that the next job stays queued.
    pid_files = [tmp_path / f"pid{i}" for i in range(2)]
    sleepers = [submit(http, sleeper, str(p), 60) for p in pid_files]
    assert {s["backend"] for s in sleepers} == {engine}
    for s in sleepers:
        wait_state(http, s["id"], "running")
    pids = [int(poll(p.read_text, 30, f"pid in {p}")) for p in pid_files]

    never = tmp_path / "never"
    queued = submit(http, toucher, str(never))
    r = http.post(f"/jobs/{queued['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "canceled" and r.json()["error"]["type"] == "Canceled"

    for s, pid in zip(sleepers, pids, strict=True):
        r = http.post(f"/jobs/{s['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "canceled", r.text
        poll(lambda pid=pid: not _alive(pid), 30, f"the {engine} process {pid} to stop")

    # A job queued behind the canceled one runs, so the queue has moved past it.
    sentinel = tmp_path / "sentinel"
    after = submit(http, toucher, str(sentinel))
    wait_state(http, after["id"], "succeeded")
    assert sentinel.exists() and not never.exists()
    final = http.get(f"/jobs/{queued['id']}").json()
    assert (final["state"], final["attempts"], final["started_at"]) == ("canceled", 0, None)
    for s in sleepers:  # a stopped job's late outcome never overwrites canceled
        assert http.get(f"/jobs/{s['id']}").json()["state"] == "canceled"


def test_cancel_of_a_finished_job_is_409(http: httpx.Client) -> None:
    job = submit(http, "t.echo", "done")
    wait_state(http, job["id"], "succeeded")
    r = http.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 409 and "finished" in r.json()["detail"]


def test_retry_of_a_failed_job_is_a_new_linked_job(http: httpx.Client, stack: Stack) -> None:
    failed = submit(http, "t.fail_quick", "boom")
    failed = wait_state(http, failed["id"], "failed")
    assert failed["error"] == {"type": "ValueError", "message": "boom"}

    r = http.post(f"/jobs/{failed['id']}/retry")
    assert r.status_code == 202, r.text
    retry = r.json()
    assert retry["id"] != failed["id"]
    assert (retry["task"], retry["profile"], retry["backend"]) == (
        failed["task"],
        failed["profile"],
        failed["backend"],
    )
    assert stack.runtime.store.read(retry["id"])["retry_of"] == failed["id"]
    old, new = stack.runtime.store.read(failed["id"]), stack.runtime.store.read(retry["id"])
    assert old["payload"] == new["payload"]
    # Asking again (a client retrying a lost answer) does not start a third run.
    assert http.post(f"/jobs/{failed['id']}/retry").json()["id"] == retry["id"]
    assert wait_state(http, retry["id"], "failed")["error"]["message"] == "boom"


def test_retry_of_a_canceled_job_runs_it(http: httpx.Client, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    job = submit(http, "t.pid_sleep_rq", str(pid_file), 60)
    wait_state(http, job["id"], "running")
    assert http.post(f"/jobs/{job['id']}/cancel").json()["state"] == "canceled"
    retry = http.post(f"/jobs/{job['id']}/retry").json()
    assert retry["state"] == "queued" and retry["backend"] == "rq"
    wait_state(http, retry["id"], "running")
    assert http.post(f"/jobs/{retry['id']}/cancel").status_code == 200


def test_retry_is_409_unless_failed_or_canceled(http: httpx.Client) -> None:
    job = submit(http, "t.echo", "fine")
    wait_state(http, job["id"], "succeeded")
    r = http.post(f"/jobs/{job['id']}/retry")
    assert r.status_code == 409 and "succeeded" in r.json()["detail"]


# -- metrics ---------------------------------------------------------------------------------


def _families(http: httpx.Client) -> dict[str, Any]:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def _value(family: Any, suffix: str = "", **labels: str) -> float:
    return sum(
        s.value
        for s in family.samples
        if s.name == family.name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_count_jobs_events_timings_and_queues(http: httpx.Client) -> None:
    before = _families(http)
    echo = {"task": "t.echo", "profile": "quick", "backend": "celery", "queue": "quick"}
    submitted = _value(before["taskrouter_jobs_submitted"], "_total", **echo)
    succeeded = _value(before["taskrouter_jobs_succeeded"], "_total", **echo)
    jobs = [submit(http, "t.echo", i) for i in range(3)]
    for job in jobs:
        wait_state(http, job["id"], "succeeded")
    after = _families(http)
    assert _value(after["taskrouter_jobs_submitted"], "_total", **echo) == submitted + 3
    assert _value(after["taskrouter_jobs_succeeded"], "_total", **echo) >= succeeded + 3
    assert _value(after["taskrouter_jobs"], profile="quick", state="succeeded") >= 3
    for name in ("taskrouter_job_run_seconds", "taskrouter_job_queue_wait_seconds"):
        family = after[name]
        assert family.type == "histogram"
        assert _value(family, "_bucket", le="+Inf", **echo) >= 3
    assert {s.labels["backend"] for s in after["taskrouter_queue_depth"].samples} == {
        "celery",
        "rq",
    }
    assert _value(after["taskrouter_workers"], backend="rq") >= 1
    assert _value(after["taskrouter_up"], component="celery broker") == 1
    for event in ("failed", "retried", "canceled"):
        assert after[f"taskrouter_jobs_{event}"].type == "counter"


# -- authentication ----------------------------------------------------------------------------


def test_with_a_token_every_call_but_healthz_needs_it(secured: ApiServer) -> None:
    with secured.client() as anonymous, secured.client(TOKEN) as http:
        assert anonymous.get("/healthz").status_code == 200
        for path in ("/jobs/x", "/jobs", "/profiles", "/readyz", "/metrics", "/openapi.json"):
            r = anonymous.get(path)
            assert r.status_code == 401, path
            assert r.json() == {"detail": "missing or wrong bearer token"}
            assert r.headers["www-authenticate"].startswith("Bearer")
        for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"):
            r = anonymous.get("/jobs/x", headers={"Authorization": header})
            assert r.status_code == 401, header
        # Refused before the body is read: a stranger cannot make the server buffer it.
        r = anonymous.post("/jobs", content=b"x" * (2 * 1024 * 1024))
        assert r.status_code == 401

        assert http.get("/jobs/x").status_code == 404
        job = http.post("/jobs", json={"task": "t.echo", "args": [7]})
        assert job.status_code == 202
        assert http.get(f"/jobs/{job.json()['id']}").json()["task"] == "t.echo"
        assert http.get("/profiles").status_code == 200
        schema = http.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert schema["paths"]["/healthz"]["get"]["security"] == []
        assert schema["paths"]["/jobs"]["post"]["security"] == [{"bearer": []}]
        assert http.get("/docs").status_code == 200


def test_refuses_to_bind_beyond_loopback_without_a_token(stack: Stack) -> None:
    out = subprocess.run(
        cli("api", "--app", APP, "--host", "0.0.0.0", "--port", str(free_port())),
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "TASKROUTER_API_TOKEN" in out.stderr and "--insecure" in out.stderr


# -- unreachable servers: 503 naming which -----------------------------------------------------


def test_dead_redis_is_503_naming_redis(redis_url: str, tmp_path: Path) -> None:
    env = worker_env("redis://127.0.0.1:1/0", f"dead-{uuid.uuid4().hex[:6]}")
    for server in start_api(env, tmp_path / "dead.log"):
        with server.client() as http:
            assert http.get("/healthz").status_code == 200
            for method, path, body in (
                ("GET", "/jobs/x", None),
                ("GET", "/jobs", None),
                ("POST", "/jobs", {"task": "t.long_echo", "args": [1]}),
                ("POST", "/jobs/x/cancel", None),
                ("GET", "/metrics", None),
            ):
                r = http.request(method, path, json=body)
                assert r.status_code == 503, (path, r.text)
                assert r.json()["detail"].startswith("redis"), r.text
                assert r.headers["retry-after"]
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["missing"] == [
                "redis",
                "celery broker",
                "celery workers",
                "rq workers",
            ]


def test_dead_celery_broker_is_503_naming_it(redis_url: str, tmp_path: Path) -> None:
    prefix = f"{RUN_PREFIX}-nobroker"
    env = worker_env(redis_url, prefix, TASKROUTER_CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    try:
        for server in start_api(env, tmp_path / "nobroker.log"):
            with server.client() as http:
                r = http.post("/jobs", json={"task": "t.echo", "args": [1]})
                assert r.status_code == 503 and "celery broker" in r.json()["detail"], r.text
                assert http.get("/jobs?task=t.echo").json()["items"] == []  # nothing half-made
                ready = http.get("/readyz").json()
                assert ready["missing"] == ["celery broker", "celery workers", "rq workers"]
                metrics = _families(http)
                assert _value(metrics["taskrouter_up"], component="celery broker") == 0
                # RQ still takes jobs: only the unreachable engine is refused.
                assert http.post("/jobs", json={"task": "t.long_echo", "args": [1]}).is_success
    finally:
        delete_prefix(redis_url, prefix)
