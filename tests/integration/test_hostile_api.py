"""Hostile input to the HTTP API (a real ``taskrouter api`` process on the session's worker
stack): every case gets a clear 4xx, never a 500 (the server's log is checked for one at
the end), and nothing runs that should not."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskrouter import codec
from taskrouter.backends.store import new_job_id, now_ms
from taskrouter.settings import MAX_WORKFLOW_DEPTH
from tests.integration.conftest import ROOT, Stack, cli, poll
from tests.integration.test_api import ApiServer, start_api

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
LIMIT = f"at most {codec.MAX_DEPTH} levels"


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_api(stack.env, tmp_path_factory.mktemp("hostile") / "api.log")


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as client:
        yield client


def lists(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def objects(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def post(http: httpx.Client, body: str | bytes, path: str = "/jobs") -> httpx.Response:
    return http.post(path, content=body, headers=JSON)


def detail_text(r: httpx.Response) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(i["msg"] for i in detail)


def result_of(http: httpx.Client, job: dict[str, Any], timeout: float = 30) -> Any:
    def done() -> Any:
        seen = http.get(f"/jobs/{job['id']}").json()
        return seen if seen["state"] in ("succeeded", "failed") else None

    seen = poll(done, timeout, f"job {job['id']}")
    assert seen["state"] == "succeeded", seen
    return seen["result"]


# -- nesting depth -------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["t.echo", "t.long_echo"])
def test_arguments_nested_to_the_limit_run_and_come_back(http: httpx.Client, task: str) -> None:
    body = f'{{"task": "{task}", "args": [{lists(codec.MAX_DEPTH - 1, objects(1))}]}}'
    r = post(http, body)
    assert r.status_code == 202, r.text
    expected: Any = {"a": 1}
    for _ in range(codec.MAX_DEPTH - 1):
        expected = [expected]
    assert result_of(http, r.json()) == expected


@pytest.mark.parametrize("depth", [codec.MAX_DEPTH + 1, 500, 950, 990, 1200, 100_000])
@pytest.mark.parametrize("shape", ["lists", "objects"])
def test_arguments_nested_past_the_limit_are_422_naming_it(
    http: httpx.Client, depth: int, shape: str
) -> None:
    value = lists(depth) if shape == "lists" else objects(depth)
    for body in (
        f'{{"task": "t.echo", "args": [{value}]}}',
        f'{{"task": "t.long_echo", "kwargs": {{"value": {value}}}}}',
    ):
        r = post(http, body)
        assert r.status_code == 422, (depth, r.text[:300])
        assert LIMIT in detail_text(r)


@pytest.mark.parametrize("depth", [codec.MAX_DEPTH + 1, 950, 100_000])
def test_workflow_bodies_nested_past_the_limits_are_422(http: httpx.Client, depth: int) -> None:
    step = f'{{"task": "t.echo", "args": [{lists(depth)}]}}'
    r = post(http, f'{{"kind": "chain", "steps": [{step}]}}', "/workflows")
    assert r.status_code == 422, r.text[:300]
    assert LIMIT in detail_text(r)
    levels = min(depth, 30_000)  # more would pass the body limit (413)
    nested = '{"kind":"chain","steps":[' * levels + '{"task":"t.echo"}' + "]}" * levels
    r = post(http, nested, "/workflows")
    assert r.status_code == 422, r.text[:300]
    assert f"at most {MAX_WORKFLOW_DEPTH} levels" in detail_text(r)


def test_a_workflow_member_nested_to_the_limit_runs(http: httpx.Client) -> None:
    deep: Any = 1
    for _ in range(codec.MAX_DEPTH):
        deep = [deep]
    member = {"task": "t.echo", "args": [deep]}
    r = http.post("/workflows", json={"kind": "group", "members": [member]})
    assert r.status_code == 202, r.text[:300]

    def ended() -> Any:
        run = http.get(f"/workflows/{r.json()['id']}").json()
        return run if run["state"] in ("succeeded", "failed", "canceled") else None

    run = poll(ended, 30, "the workflow")
    assert run["state"] == "succeeded" and run["result"] == [deep]


# -- numbers, text and bytes ----------------------------------------------------------------


@pytest.mark.parametrize(
    "literal", ["1e999999", "-1e999999", "NaN", "Infinity", "-Infinity", "1" * 4301]
)
def test_numbers_json_or_the_codec_cannot_hold_are_422(http: httpx.Client, literal: str) -> None:
    r = post(http, f'{{"task": "t.echo", "args": [{literal}]}}')
    assert r.status_code == 422, r.text[:300]
    r = post(http, f'{{"task": "t.echo", "kwargs": {{"n": [{literal}]}}}}')
    assert r.status_code == 422, r.text[:300]


def test_a_hundred_thousand_digit_number_is_422_and_quick(http: httpx.Client) -> None:
    started = time.monotonic()
    r = post(http, '{"task": "t.echo", "args": [' + "7" * 100_000 + "]}")
    assert r.status_code == 422 and time.monotonic() - started < 5


@pytest.mark.parametrize("task", ["t.echo", "t.long_echo"])
def test_the_longest_int_json_reads_runs_and_comes_back(http: httpx.Client, task: str) -> None:
    big = int("9" * 4300)
    r = post(http, f'{{"task": "{task}", "args": [{big}, -{big}, 1e308, -0.0]}}')
    assert r.status_code == 202, r.text[:300]
    r = http.post("/jobs", json={"task": task, "args": [[big, -big, 1e308, 5e-324]]})
    assert result_of(http, r.json()) == [big, -big, 1e308, 5e-324]


@pytest.mark.parametrize(
    "body",
    [
        b'{"task": "t.echo", "args": ["\xff\xfe"]}',
        b'{"task": "t.echo", "args": ["\xed\xa0\x80"]}',  # a surrogate, UTF-8 encoded
        b'{"task": "t.echo", "args": ["\\ud800"]}',
        b'{"task": "t.echo", "kwargs": {"\\udfff": 1}}',
        b'{"task": "t.echo\\u0000", "args": []}',
        b'{"task": "t.echo", "args": []}\x00',
        b'{"task": "t.echo", "task": "t.echo", "args": [1] ',
    ],
    ids=[
        "invalid utf-8",
        "encoded surrogate",
        "escaped lone surrogate",
        "surrogate key",
        "nul in the task",
        "trailing nul",
        "truncated",
    ],
)
def test_bytes_that_are_not_valid_json_text_are_4xx(http: httpx.Client, body: bytes) -> None:
    r = post(http, body)
    assert r.status_code in (404, 422), r.text[:300]


# -- ids in paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "x" * 4000,
        "%E3%82%B8%E3%83%A7%E3%83%96",  # unicode
        "..",
        "%2e%2e",
        "%2e%2e%2fprofiles",
        "%00",
        "a%00b",
        "%ff",
        "%ed%a0%80",  # a surrogate
        "%F0%9F%92%A3",
        "%27%20OR%201%3D1%20--",
        "*",
        "%7Bjob_id%7D",
        "0" * 28,
    ],
)
def test_odd_ids_in_paths_are_404(http: httpx.Client, raw: str) -> None:
    for method, path in (
        ("GET", f"/jobs/{raw}"),
        ("POST", f"/jobs/{raw}/cancel"),
        ("POST", f"/jobs/{raw}/retry"),
        ("GET", f"/workflows/{raw}"),
        ("POST", f"/workflows/{raw}/cancel"),
    ):
        # Sent as written: httpx would otherwise resolve ".." itself.
        r = http.request(method, http.base_url.copy_with(raw_path=path.encode()))
        assert r.status_code in (404, 405), (method, path, r.status_code, r.text[:200])
        assert "detail" in r.json()


def test_an_id_too_long_for_a_request_line_is_refused_without_a_500(api: ApiServer) -> None:
    # Over what HTTP clients send (httpx refuses to): written on a socket.
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as conn:
        conn.sendall(
            b"GET /jobs/"
            + b"x" * 200_000
            + b" HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{api.port}\r\nConnection: close\r\n\r\n".encode()
        )
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None
    assert status is None or 400 <= status < 500, reply[:300]


# -- cursors ---------------------------------------------------------------------------------


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "=",
        "%",
        "\u00e9",
        "A" * 10_000,
        _cursor("2:1:x"),
        _cursor("1:-5:x"),
        _cursor("1:1.5:x"),
        _cursor("1:1:"),
        _cursor("1:" + "9" * 5000 + ":x"),
        base64.urlsafe_b64encode(b"1:1:\xff").decode(),
    ],
)
def test_tampered_cursors_are_422(http: httpx.Client, cursor: str) -> None:
    r = http.get("/jobs", params={"cursor": cursor})
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("raw", ["1:99999999999999999999999:x", "1:0:x", "1:1:" + "z" * 500])
def test_well_formed_cursors_of_any_position_page_normally(http: httpx.Client, raw: str) -> None:
    r = http.get("/jobs", params={"cursor": _cursor(raw), "limit": 2})
    assert r.status_code == 200, r.text[:300]
    assert set(r.json()) == {"items", "next_cursor"}


# -- damaged records -------------------------------------------------------------------------


def _indexes(stack: Stack, task: str) -> list[str]:
    keys = stack.runtime.store.keys
    return [keys.index(), keys.index("task", task), keys.index("state", "succeeded")]


def _plant(stack: Stack, job_id: str, fields: dict[str, Any] | str, task: str) -> None:
    """A record written by someone other than taskrouter, listed in the indexes."""
    store = stack.runtime.store
    key = store.keys.job(job_id)
    client = store.client
    if isinstance(fields, str):
        client.set(key, fields, ex=600)
    else:
        client.hset(key, mapping=fields)
        client.expire(key, 600)
    for index in _indexes(stack, task):
        client.zadd(index, {job_id: now_ms()})


def _unplant(stack: Stack, job_id: str, task: str) -> None:
    stack.runtime.store.client.delete(stack.runtime.store.keys.job(job_id))
    for index in _indexes(stack, task):
        stack.runtime.store.client.zrem(index, job_id)


def _good(job_id: str, task: str, **fields: Any) -> dict[str, Any]:
    base = {"id": job_id, "task": task, "profile": "quick", "backend": "celery"}
    return {**base, "queue": "quick", "state": "succeeded", "created_at": now_ms(), **fields}


# Fields over a good record (None: the field is missing), or what the key holds instead.
GARBLED: dict[str, dict[str, str | None] | str] = {
    "no id": {"id": None},
    "no state": {"state": None},
    "unknown state": {"state": "exploded"},
    "another id": {"id": "someone-else"},
    "attempts not a number": {"attempts": "three"},
    "time not a number": {"created_at": "yesterday"},
    "time past year 9999": {"finished_at": "1e20"},
    "error not json": {"error": "{oops"},
    "error not an object": {"error": "[1]"},
    "result not the codec's": {"result": '{"__tr__": "pickle", "v": "gASV"}'},
    "a string, not a hash": "not a record",
}


def _garbled(job_id: str, task: str, damage: str) -> dict[str, Any] | str:
    change = GARBLED[damage]
    if isinstance(change, str):
        return change
    fields = {**_good(job_id, task), **change}
    return {k: v for k, v in fields.items() if v is not None}


def test_damaged_records_are_409_naming_the_damage_and_listings_skip_them(
    http: httpx.Client, stack: Stack
) -> None:
    task = f"t.planted-{uuid.uuid4().hex[:8]}"
    planted = {damage: new_job_id() for damage in GARBLED}
    fine = new_job_id()
    for damage, job_id in planted.items():
        _plant(stack, job_id, _garbled(job_id, task, damage), task)
    _plant(stack, fine, _good(fine, task), task)
    try:
        _read_around(http, stack, task, planted, fine)
    finally:
        for job_id in [*planted.values(), fine]:
            _unplant(stack, job_id, task)


def _read_around(
    http: httpx.Client, stack: Stack, task: str, planted: dict[str, str], fine: str
) -> None:
    for damage, job_id in planted.items():
        r = http.get(f"/jobs/{job_id}")
        assert r.status_code == 409, (damage, r.text[:300])
        assert "damaged" in r.json()["detail"], damage
    for query in ({}, {"task": task}, {"task": task, "state": "succeeded"}):
        listed = http.get("/jobs", params={**query, "limit": 500})
        assert listed.status_code == 200, listed.text[:300]
        ids = [j["id"] for j in listed.json()["items"]]
        assert not set(planted.values()) & set(ids)
        assert not query or ids == [fine], (query, ids)
    out = _cli(stack, "jobs", "--task", task, "--limit", "50")
    assert out.returncode == 0, out.stderr
    assert fine in out.stdout and "Traceback" not in out.stderr
    assert not [job_id for job_id in planted.values() if job_id in out.stdout]
    for damage in ("no id", "another id", "a string, not a hash"):
        status = _cli(stack, "status", planted[damage])
        assert status.returncode == 1 and "damaged" in status.stderr, (damage, status)
        assert "Traceback" not in status.stderr


def _cli(stack: Stack, *args: str) -> Any:
    import subprocess

    return subprocess.run(
        cli(*args), env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


# -- DNS rebinding ---------------------------------------------------------------------------


def test_without_a_token_a_rebound_host_name_is_421_and_changes_nothing(
    http: httpx.Client, api: ApiServer, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    evil = {"Host": "evil.example", **JSON}
    sent = b'{"task": "t.touch", "args": ["' + str(marker).encode() + b'"]}'
    r = http.post("/jobs", content=sent, headers=evil)
    assert r.status_code == 421 and "--allowed-host" in r.json()["detail"]
    victim = http.post("/jobs", json={"task": "t.sleep_celery", "args": [5]}).json()
    for host in ("evil.example", f"evil.example:{api.port}", f"127.0.0.1:{api.port + 1}"):
        r = http.post(f"/jobs/{victim['id']}/cancel", headers={"Host": host})
        assert r.status_code == 421, host
        assert http.get("/jobs", headers={"Host": host}).status_code == 421
    assert http.get(f"/jobs/{victim['id']}").json()["state"] in ("queued", "running")
    for host in (f"127.0.0.1:{api.port}", f"localhost:{api.port}"):
        assert http.get(f"/jobs/{victim['id']}", headers={"Host": host}).status_code == 200
    assert http.post(f"/jobs/{victim['id']}/cancel").status_code == 200
    assert not marker.exists()


def test_allowed_host_lets_a_named_host_in(stack: Stack, tmp_path: Path) -> None:
    for server in start_api(
        stack.env, tmp_path / "api.log", "--allowed-host", "tasks.internal", "--allowed-host", "b:1"
    ):
        with server.client() as http:
            r = http.post(
                "/jobs", json={"task": "t.echo", "args": [1]}, headers={"Host": "tasks.internal"}
            )
            assert r.status_code == 202, r.text
            assert http.get("/profiles", headers={"Host": "other.internal"}).status_code == 421


def test_with_a_token_the_token_decides_whatever_the_host(stack: Stack, tmp_path: Path) -> None:
    token = "t-" + uuid.uuid4().hex
    for server in start_api({**stack.env, "TASKROUTER_API_TOKEN": token}, tmp_path / "api.log"):
        with server.client(token) as http:
            assert http.get("/profiles", headers={"Host": "evil.example"}).status_code == 200
        with server.client() as anonymous:
            r = anonymous.get("/profiles", headers={"Host": "evil.example"})
            assert r.status_code == 401


# -- values shaped like the codec's tags ------------------------------------------------------


TAGGED = [
    {codec.TAG: "dict", "v": [["x", 1]]},
    {codec.TAG: "d", "v": [["x", 1]]},
    {codec.TAG: "tuple", "v": [1, 2]},
    {codec.TAG: "bytes", "v": "AAE="},
    {codec.TAG: "pickle", "v": "gASV"},
]


@pytest.mark.parametrize("task", ["t.echo_call", "t.echo_call_rq"])
def test_kwargs_shaped_like_codec_tags_reach_the_task_as_sent(http: httpx.Client, task: str):
    jobs = [
        http.post("/jobs", json={"task": task, "args": [value], "kwargs": value}).json()
        for value in TAGGED
    ]
    for value, job in zip(TAGGED, jobs, strict=True):
        assert result_of(http, job) == {"args": [value], "kwargs": value}
