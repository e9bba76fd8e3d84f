"""The workflow state machine (lua/wf_*.lua) on a real Redis, with no workers: members are
claimed and finished here, so races and crashes can be staged exactly."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskrouter import (
    BackendUnavailable,
    JobNotFound,
    JobStateConflict,
    PayloadError,
    TaskNotRegistered,
    WorkflowFailed,
    WorkflowNotFound,
    chain,
    chord,
    codec,
    group,
)
from taskrouter.backends import workflows
from taskrouter.backends.store import now_ms
from taskrouter.registry import CallOptions
from taskrouter.workflow import Signature
from tests.helpers import poll
from tests.integration import app

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
routing: {long_after: 30s, workflows: per-step}
profiles:
  quick: {expected_latency: 100ms, timeout: 20s}
  long: {expected_latency: 60s, timeout: 60s}
"""


class Recorder:
    """A fake engine: records what is sent and stopped; ``down`` makes sends fail."""

    name = "fake"

    def __init__(self, store: Any) -> None:
        self.store = store
        self.sent: list[str] = []
        self.stopped: list[str] = []
        self.down = False
        self._lock = threading.Lock()

    def send(self, job_id, dispatch, settings, *, call=None, create=None, redispatch=False) -> None:
        if self.down:
            raise BackendUnavailable("fake engine", "down")
        with self._lock:
            self.sent.append(job_id)
        if redispatch:
            self.store.dispatched(job_id, settings.backend)

    def stop(self, job_id, dispatch, *, running) -> None:
        self.stopped.append(job_id)

    def close(self) -> None:
        pass


@pytest.fixture
def runtime(redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[Any]:
    from taskrouter.backends.runtime import Runtime
    from taskrouter.derive import derive
    from taskrouter.policy_file import load_policy
    from taskrouter.settings import Settings

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    settings = Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        policy_path=str(path),
        rq_key_prefix=os.environ["RQ_KEY_PREFIX"],
    )
    rt = Runtime(settings, derive(load_policy(str(path))))
    recorder = Recorder(rt.store)
    rt.install_backend("celery", recorder)
    rt.install_backend("rq", recorder)
    rt.recorder = recorder
    yield rt
    rt.close()


def finish(rt: Any, job_id: str, value: Any = None, *, error: str = "") -> None:
    """Run a member as a worker would: claim it, end it, count it."""
    token = uuid.uuid4().hex
    claim = rt.store.claim(job_id, 1, "test", token, 60_000)
    assert claim.status == "ok", claim
    outcome = "failed" if error else "succeeded"
    body = json.dumps({"type": "ValueError", "message": error}) if error else codec.dumps(value)
    assert rt.store.finish(job_id, token, outcome, body, history={"attempt": 1})[0] == "ok"


def _count(rt: Any, job_id: str, start: threading.Barrier) -> None:
    start.wait()  # all at once: the counts race inside Redis
    workflows.count_finished(rt, job_id)


def test_concurrent_finishes_start_the_body_once_with_results_in_order(runtime):
    n = 60
    for _ in range(3):
        runtime.recorder.sent.clear()
        run = workflows.enqueue(
            runtime, chord([app.wf_square_rq.s(i) for i in range(n)], app.wf_collect.s("k"))
        )
        header, body = run.jobs[:n], run.jobs[n]
        assert runtime.recorder.sent == [j.id for j in header]
        for i, job in enumerate(header):
            finish(runtime, job.id, i * i)
        start = threading.Barrier(n)
        threads = [threading.Thread(target=_count, args=(runtime, j.id, start)) for j in header]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert runtime.recorder.sent[n:] == [body.id]  # released once, sent once
        record = runtime.store.read(body.id)
        assert record["state"] == "queued"
        assert codec.decode_call(record["payload"]) == (([i * i for i in range(n)], "k"), {})
        dispatching = runtime.store.keys.dispatching(record["backend"])
        assert runtime.store.client.zscore(dispatching, body.id) is None
        assert workflows.get(runtime, run.id).state == "running"


def test_failure_propagates_through_nesting_naming_the_member(runtime):
    run = workflows.enqueue(
        runtime,
        chain(
            app.wf_add.s(1, 1),
            chord([app.wf_square_rq.s(), app.wf_square_rq.s()], app.wf_collect.s("k")),
            app.wf_add.s(5),
        ),
    )
    first, ok, bad, body, last = (j.id for j in run.jobs)
    finish(runtime, first, 2)
    workflows.count_finished(runtime, first)
    assert codec.decode_call(runtime.store.read(ok)["payload"]) == ((2,), {})
    finish(runtime, bad, error="broken")
    workflows.count_finished(runtime, bad)
    body_record, last_record = runtime.store.read(body), runtime.store.read(last)
    assert body_record["state"] == "failed"
    assert json.loads(body_record["error"]) == {
        "type": "UpstreamFailed",
        "message": f"header 2 (t.wf_square_rq, job {bad}) failed: ValueError: broken",
    }
    assert last_record["state"] == "canceled"
    assert json.loads(last_record["error"])["type"] == "Canceled"
    assert workflows.get(runtime, run.id).state == "running"  # a header member still runs
    finish(runtime, ok, 4)
    workflows.count_finished(runtime, ok)
    done = workflows.get(runtime, run.id)
    assert done.state == "failed" and done.result is None
    assert done.error["job_id"] == bad and done.error["member"].startswith("header 2")
    assert runtime.recorder.sent.count(body) == 0


def test_a_member_finished_but_never_counted_is_caught_up(runtime, monkeypatch):
    run = workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), app.wf_add.s(3)))
    first, second = (j.id for j in run.jobs)
    finish(runtime, first, 3)  # its worker died before counting it
    assert runtime.store.read(second)["state"] == "scheduled"
    assert workflows.sweep(runtime) == 0  # too recent: its worker may be counting it now
    monkeypatch.setattr(workflows, "CATCH_UP_AFTER_MS", 0)
    assert workflows.sweep(runtime) == 1
    assert runtime.recorder.sent[-1] == second
    assert codec.decode_call(runtime.store.read(second)["payload"]) == ((3, 3), {})
    assert workflows.sweep(runtime) == 0  # counted once


def test_a_released_member_whose_send_failed_is_sent_by_the_pump(runtime):
    run = workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), app.wf_add.s(3)))
    first, second = (j.id for j in run.jobs)
    finish(runtime, first, 3)
    runtime.recorder.down = True
    workflows.count_finished(runtime, first)  # the flip happened, the send did not
    assert runtime.store.read(second)["state"] == "queued"
    dispatching = runtime.store.keys.dispatching(runtime.store.read(second)["backend"])
    assert runtime.store.client.zscore(dispatching, second) is not None
    runtime.recorder.down = False
    runtime.store.client.zadd(dispatching, {second: 0})  # the grace has passed
    assert runtime.pump() == 1
    assert runtime.recorder.sent[-1] == second


def test_the_pump_sends_the_due_jobs_of_every_engine(runtime):
    delayed = CallOptions(delay=0.001)
    jobs = [runtime.enqueue(t, (1, 2), {}, delayed) for t in (app.wf_add, app.wf_square_rq)]
    assert sorted(runtime.store.read(j.id)["backend"] for j in jobs) == ["celery", "rq"]
    due = max(int(runtime.store.read(j.id)["due_at"]) for j in jobs)
    poll(lambda: now_ms() > due, 5, "both jobs to fall due")
    assert runtime.pump() == 2
    assert sorted(runtime.recorder.sent) == sorted(j.id for j in jobs)
    assert runtime.pump() == 0  # each sent once, and confirmed in its engine's set


def test_cancel_ends_every_unfinished_member(runtime):
    run = workflows.enqueue(
        runtime, chord([app.wf_add.s(1, 1), app.wf_add.s(2, 2)], app.wf_collect.s("k"))
    )
    done, running, _ = (j.id for j in run.jobs)
    finish(runtime, done, 2)
    workflows.count_finished(runtime, done)
    assert runtime.store.claim(running, 1, "test", "tok", 60_000).status == "ok"
    canceled = workflows.get(runtime, run.id).cancel()
    assert canceled.state == "canceled"
    assert [j.state for j in canceled.jobs] == ["succeeded", "canceled", "canceled"]
    assert runtime.recorder.stopped == [running]  # the running member was stopped
    with pytest.raises(WorkflowFailed, match=r"canceled: the workflow was canceled$"):
        canceled.wait(1)
    with pytest.raises(JobStateConflict):
        canceled.cancel()
    assert runtime.store.client.zscore(runtime.store.keys.active_workflows, run.id) is None


def test_unknown_workflow_is_not_found(runtime):
    with pytest.raises(WorkflowNotFound) as err:
        workflows.get(runtime, "0" * 28)
    assert isinstance(err.value, JobNotFound) and "workflow" in str(err.value)


def test_bad_workflows_are_refused_before_any_write(runtime):
    index = runtime.store.keys.index()
    with pytest.raises(TaskNotRegistered):
        workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), Signature("t.nope")))
    with pytest.raises(PayloadError, match=r"step 2 \(t.wf_add\): argument 0"):
        workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), app.wf_add.s(object())))
    assert runtime.store.client.zcard(index) == 0
    runtime.recorder.down = True
    with pytest.raises(BackendUnavailable):
        workflows.enqueue(runtime, group(app.wf_add.s(1, 2), app.wf_add.s(3, 4)))
    assert runtime.store.client.zcard(index) == 0
    assert runtime.store.client.zcard(runtime.store.keys.active_workflows) == 0


def test_a_canvas_member_continues_its_canvas_once(runtime):
    run = workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), app.wf_add.s(3)))
    first, second = (j.id for j in run.jobs)
    assert runtime.workflows.arrive(second, 1)[0] == "waiting"
    assert runtime.workflows.may_continue(first)[0] is False  # not finished yet
    finish(runtime, first, 3)
    assert runtime.workflows.may_continue(first) == (True, "succeeded", None)
    assert runtime.workflows.may_continue(first)[0] is False  # a ghost copy
    workflows.count_finished(runtime, first)
    assert runtime.workflows.arrive(second, 1) == ("ok", "queued")  # per-step: sent
    assert runtime.workflows.arrive(second, 2)[0] == "stale"


def test_a_member_canceled_on_its_own_cancels_what_waits_for_it(runtime, monkeypatch):
    run = workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), app.wf_add.s(3), app.wf_add.s(4)))
    first = run.jobs[0].id
    runtime.cancel_job(first)  # through the jobs API: nobody counts it at once
    monkeypatch.setattr(workflows, "CATCH_UP_AFTER_MS", 0)
    done = workflows.get(runtime, run.id)  # a reader catches up
    assert [j.state for j in done.jobs] == ["canceled"] * 3
    assert done.jobs[2].error["message"] == f"canceled: step 1 (t.wf_add, job {first}) was canceled"
    with pytest.raises(WorkflowFailed) as err:
        done.wait(1)
    assert (
        str(err.value) == f"workflow {run.id} canceled: step 1 (t.wf_add, job {first}) was canceled"
    )
    assert err.value.job_id == first


def test_the_sweep_clears_the_indexes_of_members_that_expired_unfinished(runtime, monkeypatch):
    monkeypatch.setattr(workflows, "UNFINISHED_TTL", 0.05)  # seconds: records live 50 ms
    run = workflows.enqueue(runtime, chain(app.wf_add.s(1, 2), app.wf_add.s(3)))
    client, keys = runtime.store.client, runtime.store.keys
    indexes = [(j.id, keys.index(f, v)) for j in run.jobs for f, v in index_pairs(runtime, j.id)]
    assert all(client.zscore(key, job_id) is not None for job_id, key in indexes)
    poll(lambda: not any(runtime.store.exists(j.id) for j in run.jobs), 5, "the records to expire")
    swept = poll(lambda: runtime.store.sweep(), 5, "the sweep to find the expired members")
    assert swept == len(run.jobs)
    left = [(job_id, key) for job_id, key in indexes if client.zscore(key, job_id) is not None]
    assert left == []


def index_pairs(rt: Any, job_id: str) -> list[tuple[str, str]]:
    """(field, value) of every index a job's record is in now."""
    r = rt.store.read(job_id)
    return [("all", "")] + [(f, r[f]) for f in ("state", "profile", "backend", "task")]
