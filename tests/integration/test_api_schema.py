"""Property-based run of the API's own OpenAPI schema against the live server.

Schemathesis generates requests from /openapi.json (valid and invalid ones), sends them to
a real ``taskrouter api`` with a token, on the session's worker stack, and checks that no
answer is a server error and that every answer matches the schema. Some generated bodies
and ids are swapped for registered tasks and existing jobs, so that the success paths
(202, 200, 409) are exercised too, not only 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import Stack, poll
from tests.integration.test_api import ApiServer, start_api

pytestmark = pytest.mark.integration

TOKEN = "schema-token"
MAX_EXAMPLES = 30  # per operation: 8 operations finish in well under a minute
# Beyond no 500 and every body as documented: every status and content type documented.
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture(scope="module")
def server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log: Path = tmp_path_factory.mktemp("api") / "schema.log"
    yield from start_api({**stack.env, "TASKROUTER_API_TOKEN": TOKEN}, log)


@pytest.fixture(scope="module")
def known_jobs(server: ApiServer) -> list[str]:
    """A succeeded and a failed job: ids for the generated cancel, retry and read calls."""
    with server.client(TOKEN) as http:
        ids = [
            http.post("/jobs", json={"task": task, "args": ["x"]}).json()["id"]
            for task in ("t.echo", "t.fail_quick")
        ]
        for job_id in ids:
            poll(
                lambda job_id=job_id: (
                    http.get(f"/jobs/{job_id}").json()["state"] in ("succeeded", "failed")
                ),
                30,
                f"job {job_id} to finish",
            )
    return ids


def one_level_workflows(raw: dict[str, Any]) -> dict[str, Any]:
    """The schema with each workflow node's children limited to task calls.

    A workflow node holds nodes: a recursive schema, whose strategy Hypothesis builds by
    recursing deeper than the stack it allows for it (a RecursionError on some runs).
    Requests are generated from the one-level schema; responses are still checked
    against the full one, and the server accepts any depth.
    """
    components = raw.get("components", {}).get("schemas", {})
    call = {"$ref": "#/components/schemas/CallIn"}
    for name, fields in (("ChainIn", ["steps"]), ("GroupIn", ["members"]), ("ChordIn", ["header"])):
        for field in fields:
            if name in components:
                components[name]["properties"][field]["items"] = call
    if "ChordIn" in components:
        components["ChordIn"]["properties"]["body"] = call
    return raw


@pytest.fixture(scope="module")
def api_schema(server: ApiServer, known_jobs: list[str]) -> Any:
    raw = httpx.get(
        f"{server.base_url}/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    schema = schemathesis.openapi.from_dict(one_level_workflows(raw))

    @schema.hook("flatmap_body")
    def real_tasks(context: Any, body: Any) -> Any:
        if not isinstance(body, dict) or "task" not in body:
            return st.just(body)
        return st.sampled_from([body, {**body, "task": "t.echo"}])

    @schema.hook("flatmap_path_parameters")
    def real_jobs(context: Any, params: dict[str, Any]) -> Any:
        if not params or "job_id" not in params:
            return st.just(params)
        return st.sampled_from([params, *({**params, "job_id": j} for j in known_jobs)])

    return schema


# Every operation, listed so that each is its own test (and a new endpoint is noticed:
# see test_every_operation_is_covered).
OPERATIONS = [
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("POST", "/jobs/{job_id}/cancel"),
    ("POST", "/jobs/{job_id}/retry"),
    ("POST", "/jobs/cancel"),
    ("POST", "/jobs/retry"),
    ("POST", "/workflows"),
    ("GET", "/workflows/{workflow_id}"),
    ("POST", "/workflows/{workflow_id}/cancel"),
    ("GET", "/profiles"),
    ("GET", "/schedules"),
    ("POST", "/profiles/{profile}/pause"),
    ("POST", "/profiles/{profile}/resume"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_server_keeps_to_its_schema(
    api_schema: Any, server: ApiServer, method: str, path: str
) -> None:
    # Schemathesis's own @schema.parametrize() needs pytest internals that pytest 9
    # removed (Function._nodeid), so the operation's strategy drives Hypothesis here.
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases on every run: a failure is reproducible
        database=None,
    )
    def keeps_to_schema(case: Any) -> None:
        case.call_and_validate(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            checks=CHECKS,
            timeout=30,
        )

    keeps_to_schema()


def test_every_operation_is_covered(api_schema: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


def test_the_schema_needs_the_token(server: ApiServer) -> None:
    assert httpx.get(f"{server.base_url}/openapi.json").status_code == 401
