"""``/workflows`` of the HTTP API: a real ``taskrouter api`` process on the session's
worker stack (Celery mode), plain HTTP from this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack, poll
from tests.integration.test_api import start_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    servers = start_api(stack.env, tmp_path_factory.mktemp("api") / "workflows.log")
    server = next(servers)
    try:
        with server.client() as client:
            yield client
    finally:
        servers.close()


def call(task: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"task": task, "args": list(args), "kwargs": kwargs}


def finished(http: httpx.Client, workflow_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = http.get(f"/workflows/{workflow_id}").json()
        return body if body["state"] in ("succeeded", "failed", "canceled") else None

    result: dict[str, Any] = poll(done, 30, f"workflow {workflow_id}")
    return result


def test_post_a_chord_then_get_its_state_members_and_result(http, stack):
    runs = f"{stack.prefix}:test:api-runs"
    description = {
        "kind": "chord",
        "header": [call("t.wf_square", i) for i in range(4)],
        "body": {"kind": "task", "task": "t.wf_collect", "args": [runs]},
    }
    answer = http.post("/workflows", json=description)
    assert answer.status_code == 202, answer.text
    created = answer.json()
    assert answer.headers["location"] == f"/workflows/{created['id']}"
    assert created["kind"] == "chord" and created["mode"] == "celery"
    assert [j["state"] for j in created["jobs"]] == ["queued"] * 4 + ["scheduled"]
    assert {j["workflow_id"] for j in created["jobs"]} == {created["id"]}
    done = finished(http, created["id"])
    assert done["state"] == "succeeded" and done["result"] == [0, 1, 4, 9]
    assert done["counts"] == {"succeeded": 5} and done["error"] is None
    assert [j["state"] for j in done["jobs"]] == ["succeeded"] * 5
    # Each member is a job of /jobs as well.
    body_id = done["jobs"][-1]["id"]
    assert http.get(f"/jobs/{body_id}").json()["result"] == [0, 1, 4, 9]


def test_nested_chain_and_a_failure_naming_its_member(http):
    description = {
        "kind": "chain",
        "steps": [
            call("t.wf_add", 1, 2),
            {"kind": "group", "members": [call("t.wf_add", 10), call("t.fail_quick")]},
            call("t.wf_collect", "unused"),
        ],
    }
    created = http.post("/workflows", json=description).json()
    done = finished(http, created["id"])
    bad = done["jobs"][2]
    assert done["state"] == "failed" and done["result"] is None
    assert done["error"]["job_id"] == bad["id"]
    assert done["error"]["member"] == f"member 2 (t.fail_quick, job {bad['id']})"
    assert (done["error"]["type"], done["error"]["message"]) == ("ValueError", "3")
    assert [j["state"] for j in done["jobs"]] == ["succeeded", "succeeded", "failed", "failed"]
    assert done["jobs"][3]["error"]["type"] == "UpstreamFailed"


def test_cancel_over_http(http):
    created = http.post(
        "/workflows", json={"kind": "chain", "steps": [call("t.sleep_celery", 30)] * 2}
    ).json()
    poll(
        lambda: http.get(f"/workflows/{created['id']}").json()["jobs"][0]["state"] == "running",
        15,
        "step 1 to run",
    )
    answer = http.post(f"/workflows/{created['id']}/cancel")
    assert answer.status_code == 200
    assert answer.json()["state"] == "canceled"
    assert http.post(f"/workflows/{created['id']}/cancel").status_code == 409


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({"kind": "group", "members": [call("t.nope")]}, 404, "t.nope"),
        ({"kind": "group", "members": []}, 422, "members"),
        ({"kind": "loop", "steps": []}, 422, "kind"),
        (call("t.echo", 1), 422, "kind"),  # a single call is a job: POST /jobs
        ({"kind": "chord", "header": [call("t.echo")]}, 422, "body"),
        ({"kind": "group", "members": [{"task": "t.echo", "extra": 1}]}, 422, "extra"),
        (
            '{"kind": "group", "members": [{"task": "t.echo", "args": ["\\ud800"]}]}',
            422,
            "surrogate",
        ),
    ],
)
def test_bad_requests(http, body, status, fragment):
    if isinstance(body, str):  # raw JSON: a lone surrogate cannot be encoded from Python
        headers = {"content-type": "application/json"}
        answer = http.post("/workflows", content=body.encode(), headers=headers)
    else:
        answer = http.post("/workflows", json=body)
    assert answer.status_code == status, answer.text
    assert fragment in answer.text


def test_too_deep_or_too_large_is_422(http):
    deep: dict[str, Any] = call("t.echo", 1)
    for _ in range(40):
        deep = {"kind": "chain", "steps": [deep]}
    answer = http.post("/workflows", json=deep)
    assert answer.status_code == 422 and "nest at most 32" in answer.text
    wide = {"kind": "group", "members": [call("t.echo", i) for i in range(5001)]}
    answer = http.post("/workflows", json=wide)
    assert answer.status_code in (413, 422)


def test_unknown_workflow_is_404(http):
    answer = http.get("/workflows/" + "0" * 28)
    assert answer.status_code == 404 and "workflow" in answer.json()["detail"]


def test_a_bad_nested_item_is_located(http):
    nested = {"kind": "group", "members": [{"task": ""}]}
    answer = http.post("/workflows", json={"kind": "chain", "steps": [call("t.echo", 1), nested]})
    assert answer.status_code == 422
    assert answer.json()["detail"] == [
        {
            "loc": ["body", "steps", 1, "members", 0, "task"],
            "msg": "expected a task name",
            "type": "value_error",
        }
    ]
