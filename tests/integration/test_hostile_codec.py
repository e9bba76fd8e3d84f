"""Any JSON a caller sends reaches the task exactly as sent, on both engines, through
``enqueue()`` and through the HTTP API: property-based, in batches (each example is a
batch of calls enqueued at once, then awaited), so the run stays short."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskrouter import codec
from tests.integration import app
from tests.integration.conftest import Stack, poll
from tests.integration.test_api import ApiServer, start_api
from tests.unit.test_codec import _json_keys, _same, json_values

pytestmark = pytest.mark.integration

# Keyword arguments named like anything, the codec's tag key included; every batch has a
# call whose keyword arguments are shaped exactly like a tagged value.
_call = st.tuples(
    st.lists(json_values, max_size=3), st.dictionaries(_json_keys, json_values, max_size=3)
)
_tag_shaped = st.tuples(
    st.lists(json_values, max_size=2),
    st.fixed_dictionaries({codec.TAG: st.sampled_from(sorted(codec._DECODERS)), "v": json_values}),
)
calls = st.tuples(_tag_shaped, st.lists(_call, min_size=3, max_size=5)).map(
    lambda drawn: [drawn[0], *drawn[1]]
)
# About 25 calls per engine and path.
E2E = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ENGINES = [(app.echo_call, "celery"), (app.echo_call_rq, "rq")]


@E2E
@given(batch=calls)
def test_any_json_arguments_reach_the_task_exactly_through_enqueue(
    stack: Stack, batch: list[tuple[list[Any], dict[str, Any]]]
) -> None:
    jobs = [
        (fn.enqueue(*args, **kwargs), args, kwargs) for fn, _ in ENGINES for args, kwargs in batch
    ]
    for job, args, kwargs in jobs:
        got = job.wait(60)
        assert _same(got, {"args": tuple(args), "kwargs": kwargs}), (job.backend, got)


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    yield from start_api(stack.env, tmp_path_factory.mktemp("codec") / "api.log")


@E2E
@given(batch=calls)
def test_any_json_arguments_reach_the_task_exactly_through_the_api(
    api: ApiServer, batch: list[tuple[list[Any], dict[str, Any]]]
) -> None:
    with api.client() as http:
        sent = [
            (_post(http, fn.name, args, kwargs), args, kwargs)
            for fn, _ in ENGINES
            for args, kwargs in batch
        ]
        for job_id, args, kwargs in sent:
            got = poll(lambda job_id=job_id: _finished(http, job_id), 60, f"job {job_id}")
            assert got["state"] == "succeeded", got
            # JSON in, JSON out: the same document, every key and type as sent.
            assert _same(got["result"], {"args": args, "kwargs": kwargs}), got


def _post(http: httpx.Client, task: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    r = http.post("/jobs", json={"task": task, "args": args, "kwargs": kwargs})
    assert r.status_code == 202, r.text[:500]
    job_id: str = r.json()["id"]
    return job_id


def _finished(http: httpx.Client, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
    return job if job["state"] in ("succeeded", "failed") else None
