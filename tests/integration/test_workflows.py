"""Workflows as native Celery canvases (routing.workflows: celery, the session stack).

The same scenarios run in per-step mode in test_workflows_perstep.py; both modes must give
the same results and the same failure semantics.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid

import pytest

from taskrouter import (
    JobFailed,
    PolicyError,
    WorkflowFailed,
    chain,
    chord,
    get_job,
    get_workflow,
    group,
)
from tests.integration import app
from tests.integration.conftest import ROOT, cli, own_worker, poll

pytestmark = pytest.mark.integration


def _key(stack, name: str) -> str:
    return f"{stack.prefix}:test:{name}:{uuid.uuid4().hex[:8]}"


def test_chain_passes_each_result_first_through_the_codec(stack):
    when = dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC)
    run = chain(
        app.echo.s((1, when)),
        app.wf_shape.s("extra", flag=True),
        app.wf_shape.s(),
    ).enqueue()
    assert run.kind == "chain" and run.mode == "celery"
    assert [j.state for j in run.jobs] == ["queued", "scheduled", "scheduled"]
    assert all(j.workflow_id == run.id for j in run.jobs)
    result = run.wait(30)
    # The last step got the middle step's dict; the middle one got the tuple, still a tuple.
    assert result["type"] == "dict"
    assert result["first"]["first"] == (1, when) and result["first"]["type"] == "tuple"
    assert result["first"]["args"] == ["extra"] and result["first"]["kwargs"] == {"flag": True}
    assert run.state == "succeeded" and run.finished_at is not None
    assert [j.state for j in run.jobs] == ["succeeded"] * 3
    assert {j.backend for j in run.jobs} == {"celery"}


def test_group_returns_results_in_order(stack):
    run = group(app.wf_square.s(i, 0.05 * (5 - i)) for i in range(5)).enqueue()
    assert run.wait(30) == [0, 1, 4, 9, 16]
    assert [j.result for j in run.jobs] == [0, 1, 4, 9, 16]


def test_chord_body_gets_header_results_in_header_order(stack):
    runs = _key(stack, "runs")
    header = [app.wf_square.s(i, 0.02 * (8 - i)) for i in range(8)]
    run = chord(header, app.wf_collect.s(runs)).enqueue()
    assert [j.state for j in run.jobs] == ["queued"] * 8 + ["scheduled"]
    assert run.wait(30) == [i * i for i in range(8)]
    assert stack.runtime.store.client.llen(runs) == 1


def test_nested_canvas_chain_group_then_gathering_step(stack):
    runs = _key(stack, "runs")
    run = chain(
        app.wf_add.s(1, 1),
        group(app.wf_add.s(10), app.wf_square.s()),  # each gets 2
        app.wf_collect.s(runs),  # Celery makes this a chord: it gets [12, 4]
        app.wf_shape.s(),
    ).enqueue()
    assert run.wait(30) == {"first": [12, 4], "type": "list", "args": [], "kwargs": {}}
    assert stack.runtime.store.client.llen(runs) == 1


def test_retry_inside_a_canvas_keeps_it_going(stack):
    counter = _key(stack, "flaky")
    run = chain(app.wf_flaky.s(counter, 1), app.wf_add.s(100)).enqueue()
    assert run.wait(30) == 102  # wf_flaky succeeded on its second run
    flaky = run.jobs[0]
    assert flaky.attempts == 2 and [h["attempt"] for h in flaky.history] == [1, 2]
    # Celery's retry and its next step came: the router's late fallbacks were taken back.
    schedule = stack.runtime.store.keys.schedule
    assert [stack.runtime.store.client.zscore(schedule, j.id) for j in run.jobs] == [None] * 2


def test_failing_chain_step_stops_the_chain_naming_it(stack):
    run = chain(app.wf_add.s(1, 2), app.fail_quick.s(), app.wf_add.s(3)).enqueue()
    with pytest.raises(WorkflowFailed) as failure:
        run.wait(30)
    failed_step = run.jobs[1]
    assert isinstance(failure.value, JobFailed)
    assert failure.value.job_id == failed_step.id
    assert (failure.value.type, failure.value.message) == ("ValueError", "3")
    assert f"step 2 (t.fail_quick, job {failed_step.id})" in str(failure.value)
    assert failed_step.attempts == 3  # its retries were spent first
    last = run.jobs[2]
    assert last.state == "canceled" and last.error["type"] == "Canceled"
    assert failed_step.id in last.error["message"]
    assert run.state == "failed" and run.result is None


def test_failing_chord_header_member_fails_the_body(stack):
    runs = _key(stack, "runs")
    header = [app.wf_square.s(2), app.fail_quick.s("header down"), app.wf_square.s(3)]
    run = chord(header, app.wf_collect.s(runs)).enqueue()
    with pytest.raises(WorkflowFailed) as failure:
        run.wait(30)
    bad = run.jobs[1]
    assert failure.value.job_id == bad.id and failure.value.message == "header down"
    body = run.jobs[-1]
    assert body.state == "failed" and body.error["type"] == "UpstreamFailed"
    assert f"header 2 (t.fail_quick, job {bad.id}) failed" in body.error["message"]
    assert bad.attempts == 3
    assert [j.state for j in run.jobs[::2]] == ["succeeded", "succeeded"]
    assert stack.runtime.store.client.llen(runs) == 0


def test_group_with_a_failure_reports_partial_results(stack):
    run = group(app.wf_square.s(2), app.fail_quick.s("no"), app.wf_square.s(4)).enqueue()
    with pytest.raises(WorkflowFailed) as failure:
        run.wait(30)
    assert failure.value.result == [4, None, 16]
    assert run.state == "failed" and run.result == [4, None, 16]
    assert [j.state for j in run.jobs] == ["succeeded", "failed", "succeeded"]


def test_cancel_stops_the_running_step_and_the_rest(stack):
    run = chain(app.sleep_celery.s(30), app.wf_add.s("!")).enqueue()
    poll(lambda: run.refresh().jobs[0].state == "running", 15, "step 1 to run")
    run.cancel()
    assert run.state == "canceled"
    assert [j.state for j in run.jobs] == ["canceled", "canceled"]
    with pytest.raises(WorkflowFailed):
        run.wait(5)
    # Celery terminated the running step (its own state says so); its record stays canceled.
    native = stack.runtime.celery_app.AsyncResult(run.jobs[0].id)
    poll(lambda: native.state == "REVOKED", 10, "Celery to revoke step 1")
    assert get_job(run.jobs[0].id).state == "canceled"


def test_get_workflow_and_member_jobs_from_any_process(stack):
    run = group(app.wf_add.s(1, 1), app.wf_add.s(2, 2)).enqueue()
    run.wait(30)
    again = get_workflow(run.id)
    assert again.to_dict()["result"] == [2, 4]
    assert [j["state"] for j in again.to_dict()["jobs"]] == ["succeeded", "succeeded"]
    assert again.to_dict()["counts"] == {"succeeded": 2}


def test_status_command_shows_a_workflow(stack):
    run = chain(app.wf_add.s(1, 2), app.wf_add.s(3)).enqueue()
    run.wait(30)

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        command = cli("status", *args)
        return subprocess.run(
            command, env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    shown = status(run.id)
    assert shown.returncode == 0, shown.stderr
    assert "state        succeeded" in shown.stdout and "kind         chain" in shown.stdout
    assert all(f"  {j.id}  succeeded" in shown.stdout for j in run.jobs)
    assert json.loads(status(run.id, "--json").stdout)["result"] == 6
    missing = status("0" * 28)
    assert missing.returncode == 2 and "job or workflow" in missing.stderr


def test_ghost_copy_of_a_canvas_member_neither_runs_nor_continues_the_canvas(stack, tmp_path):
    counter, runs = _key(stack, "count"), _key(stack, "runs")
    with own_worker(stack, "celery", ["fault-celery"], concurrency=2):
        slow = app.slow_once_celery.s(str(tmp_path / "marker"), 2, counter)
        run = chord([slow, app.wf_square.s(3)], app.wf_collect.s(runs)).enqueue()
        member = run.jobs[0].id
        poll(lambda: stack.runtime.store.read(member)["state"] == "running", 30, "it to run")
        # What a visibility-timeout redelivery looks like: the same canvas message again.
        ghost = {"kwargs": {"job_id": member, "dispatch": 1, "canvas": True}}
        stack.runtime.celery_app.send_task(run.jobs[0].task, queue="fault-celery", **ghost)
        assert run.wait(30) == ["done", 9]
        refused = f"not running job {member} dispatch 1"
        poll(lambda: any(refused in p.read_text() for p in stack.log_dir.glob("*.log")), 10, "it")
    client = stack.runtime.store.client
    assert int(client.get(counter)) == 1 and client.llen(runs) == 1


def test_a_member_whose_profile_no_celery_worker_serves_is_refused(stack):
    before = stack.runtime.store.client.zcard(stack.runtime.store.keys.index())
    with pytest.raises(
        PolicyError, match=r"profiles\.long: routes to RQ.*routing.workflows: per-step"
    ):
        chain(app.echo.s(1), app.long_echo.s()).enqueue()
    assert stack.runtime.store.client.zcard(stack.runtime.store.keys.index()) == before
