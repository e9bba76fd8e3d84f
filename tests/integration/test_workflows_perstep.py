"""Workflows in per-step mode: each step on the engine its own profile picks, carried
across engines by the router (the same scenarios as test_workflows.py, Celery mode).

A second worker stack runs the integration policy with ``routing.workflows: per-step``.
RQ reads its key prefix once per process, so this stack shares the session stack's key
prefix and lives in a Redis database of its own (the test database + 1).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from taskrouter import WorkflowFailed, _runtime, chain, chord, group
from tests.conftest import REDIS_DB, STACK_PREFIX, delete_prefix
from tests.integration import app
from tests.integration.conftest import POLICY, Stack, own_worker, poll

pytestmark = pytest.mark.integration


def perstep_policy(directory: Path) -> Path:
    """The integration policy with routing.workflows: per-step (so the two never drift)."""
    data = yaml.safe_load(POLICY.read_text())
    data["routing"]["workflows"] = "per-step"
    path = directory / "policy_perstep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def perstep(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Celery (2 processes) and RQ (4 workers) on the per-step policy."""
    from taskrouter.backends.runtime import Runtime
    from taskrouter.settings import Settings

    db = int(os.environ.get("TASKROUTER_TEST_REDIS_DB_PERSTEP", str(REDIS_DB + 1)))
    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    directory = tmp_path_factory.mktemp("perstep")
    s = Stack(url, STACK_PREFIX, directory)
    s.env["TASKROUTER_POLICY"] = str(perstep_policy(directory))
    s.runtime = Runtime.from_env(Settings.from_env(s.env))
    assert s.runtime.derived.policy.routing.workflows == "per-step"
    try:
        s.start_worker("celery", concurrency=2)
        s.start_worker("rq", concurrency=4)
        s.wait_ready()
        yield s
    finally:
        s.stop()
        s.runtime.close()
        delete_prefix(url, STACK_PREFIX)


@pytest.fixture(autouse=True)
def _perstep_runtime(perstep: Stack) -> Iterator[None]:
    """``enqueue()`` and ``get_workflow()`` use the per-step stack during these tests."""
    previous = _runtime.install(perstep.runtime)
    yield
    _runtime.install(previous)


def _key(stack: Stack, name: str) -> str:
    return f"{stack.prefix}:test:{name}:{uuid.uuid4().hex[:8]}"


def test_chain_across_engines_passes_each_result_first(perstep):
    when = dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC)
    run = chain(
        app.echo.s((1, when)),
        app.long_echo.s(),
        app.wf_shape.s("extra", flag=True),
    ).enqueue()
    assert run.mode == "per-step"
    assert [j.backend for j in run.jobs] == ["celery", "rq", "celery"]
    assert [j.state for j in run.jobs] == ["queued", "scheduled", "scheduled"]
    result = run.wait(30)
    assert result == {
        "first": (1, when),
        "type": "tuple",
        "args": ["extra"],
        "kwargs": {"flag": True},
    }
    first, second, third = run.jobs
    assert first.finished_at <= second.started_at and second.finished_at <= third.started_at


def test_group_across_engines(perstep):
    run = group(app.wf_square.s(2), app.wf_square_rq.s(3), app.wf_square.s(4)).enqueue()
    assert [j.backend for j in run.jobs] == ["celery", "rq", "celery"]
    assert run.wait(30) == [4, 9, 16]


def test_chord_of_rq_header_and_celery_body_runs_the_body_once_with_all_results(perstep):
    runs = _key(perstep, "runs")
    n = 24
    # Reversed sleeps: the last members finish first, together, on four RQ workers.
    header = [app.wf_square_rq.s(i, 0.05 + 0.01 * ((n - i) % 5)) for i in range(n)]
    run = chord(header, app.wf_collect.s(runs)).enqueue()
    assert {j.backend for j in run.jobs[:n]} == {"rq"} and run.jobs[n].backend == "celery"
    body = run.jobs[n]
    assert body.state == "scheduled"
    assert run.wait(60) == [i * i for i in range(n)]
    assert perstep.runtime.store.client.llen(runs) == 1  # the body ran exactly once
    body.refresh()
    assert body.attempts == 1 and body.result == [i * i for i in range(n)]
    assert body.started_at >= max(j.finished_at for j in run.jobs[:n])


def test_nested_group_in_a_chain_feeds_a_gathering_step(perstep):
    runs = _key(perstep, "runs")
    run = chain(
        app.wf_add.s(1, 1),
        group(app.wf_add.s(10), app.wf_square_rq.s()),  # each gets 2
        app.wf_collect.s(runs),  # gets [12, 4]
    ).enqueue()
    assert run.wait(30) == [12, 4]
    assert [j.backend for j in run.jobs] == ["celery", "celery", "rq", "celery"]


def test_failing_chain_step_stops_the_chain_naming_it(perstep):
    run = chain(app.wf_add.s(1, 2), app.wf_fail_rq.s(), app.wf_add.s(3)).enqueue()
    with pytest.raises(WorkflowFailed) as failure:
        run.wait(30)
    failed_step = run.jobs[1]
    assert failed_step.backend == "rq" and failed_step.attempts == 3
    assert failure.value.job_id == failed_step.id
    assert (failure.value.type, failure.value.message) == ("ValueError", "3")
    assert f"step 2 (t.wf_fail_rq, job {failed_step.id})" in str(failure.value)
    last = run.jobs[2]
    assert last.state == "canceled" and last.error["type"] == "Canceled"
    assert f"step 2 (t.wf_fail_rq, job {failed_step.id}) failed" in last.error["message"]
    assert last.attempts == 0  # it never ran
    assert run.state == "failed" and run.result is None


def test_failing_chord_header_member_fails_the_body(perstep):
    runs = _key(perstep, "runs")
    header = [app.wf_square_rq.s(2), app.wf_fail_rq.s("header down"), app.wf_square.s(3)]
    run = chord(header, app.wf_collect.s(runs)).enqueue()
    with pytest.raises(WorkflowFailed) as failure:
        run.wait(30)
    bad, body = run.jobs[1], run.jobs[-1]
    assert failure.value.job_id == bad.id and failure.value.message == "header down"
    assert bad.attempts == 3
    assert body.state == "failed" and body.error["type"] == "UpstreamFailed"
    assert f"header 2 (t.wf_fail_rq, job {bad.id}) failed" in body.error["message"]
    assert perstep.runtime.store.client.llen(runs) == 0


def test_group_with_a_failure_reports_partial_results(perstep):
    run = group(app.wf_square_rq.s(2), app.wf_fail_rq.s("no"), app.wf_square.s(4)).enqueue()
    with pytest.raises(WorkflowFailed) as failure:
        run.wait(30)
    assert failure.value.result == [4, None, 16] and run.result == [4, None, 16]
    assert [j.state for j in run.jobs] == ["succeeded", "failed", "succeeded"]


def test_cancel_stops_running_members_on_rq_and_never_starts_the_body(perstep):
    runs = _key(perstep, "runs")
    run = chord([app.sleep_rq.s(30) for _ in range(3)], app.wf_collect.s(runs)).enqueue()
    poll(
        lambda: all(j.state == "running" for j in run.refresh().jobs[:3]),
        20,
        "the header to run",
    )
    run.cancel()
    assert run.state == "canceled"
    assert [j.state for j in run.jobs] == ["canceled"] * 4
    # RQ stopped the work-horses (its own status says so), so the workers are free again.
    from taskrouter.backends.rq_backend import CodecSerializer, SafeJob

    def stopped(job_id: str) -> bool:
        native = SafeJob.fetch(
            job_id, connection=perstep.runtime.rq.connection, serializer=CodecSerializer
        )
        return native.get_status() == "stopped"

    poll(lambda: all(stopped(j.id) for j in run.jobs[:3]), 10, "RQ to stop the header")
    after = group(app.wf_square_rq.s(i) for i in range(4)).enqueue()
    assert after.wait(15) == [0, 1, 4, 9]
    assert perstep.runtime.store.client.llen(runs) == 0


def test_a_header_member_whose_worker_dies_is_retried_and_the_body_runs_once(perstep, tmp_path):
    counter, runs = _key(perstep, "count"), _key(perstep, "runs")
    store = perstep.runtime.store
    with own_worker(perstep, "rq", ["fault-rq"]):
        marker = tmp_path / "marker"
        slow = app.slow_once_rq.s(str(marker), 30, counter)
        run = chord([slow, app.wf_square_rq.s(3)], app.wf_collect.s(runs)).enqueue()
        member = run.jobs[0].id
        # The marker says the body began (a kill just after the claim would leave the
        # retry without one, sleeping the whole 30 s).
        record = poll(
            lambda: marker.exists() and (r := store.read(member))["state"] == "running" and r,
            30,
            "it",
        )
        os.kill(int(record["worker"].rsplit("/", 1)[1]), signal.SIGKILL)  # the work-horse
        assert run.wait(30) == ["done", 9]
    assert run.jobs[0].attempts == 2 and run.jobs[0].history[0]["error"]["type"] == "WorkerLost"
    assert int(store.client.get(counter)) == 2 and store.client.llen(runs) == 1
