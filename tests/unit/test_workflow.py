"""router.workflow: building workflows, the plan the backends run, JSON descriptions, and
the Workflow handle (with a fake source: no Redis)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from taskrouter import (
    JobFailed,
    JobTimeout,
    Signature,
    WorkflowFailed,
    chain,
    chord,
    codec,
    group,
    task,
)
from taskrouter.workflow import Chain, Chord, Group
from taskrouter.workflow_handle import Workflow, aggregate_state
from taskrouter.workflow_json import from_description, to_description
from taskrouter.workflow_plan import plan


@task(profile="p", name="unit.wf.a")
def a(*args: Any) -> Any:
    return args


S = [a.s(i) for i in range(10)]


def shape(node: Any) -> list[tuple[str, str, tuple[int, ...], str]]:
    """Each step as (label, first-argument template, deps, task args)."""
    return [(s.label, s.input, s.deps, repr(s.signature.args)) for s in plan(node).steps]


# -- building ---------------------------------------------------------------------------


def test_builders_take_items_or_one_iterable_like_celery():
    assert chain(S[0], S[1]) == chain([S[0], S[1]]) == Chain((S[0], S[1]))
    assert group(s for s in S[:3]) == group(*S[:3]) == Group(tuple(S[:3]))
    assert chord(group(S[0], S[1]), S[2]) == chord([S[0], S[1]], S[2]) == Chord((S[0], S[1]), S[2])
    assert S[0] | S[1] | group(S[2], S[3]) == chain(chain(S[0], S[1]), group(S[2], S[3]))


def test_signature_of_a_task():
    assert a.s(1, x=2) == Signature("unit.wf.a", (1,), {"x": 2})


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: chain(), "empty chain"),
        (lambda: group([]), "empty group"),
        (lambda: chain(S[0], a), r"chain\[1\] is Task.*task.s\(...\)"),
        (lambda: chord([S[0]], "summary"), "chord body is str"),
        (lambda: group(S[0], 42), r"group\[1\] is int"),
    ],
)
def test_bad_builds_are_refused_at_once(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_a_single_signature_is_not_a_workflow():
    with pytest.raises(TypeError, match=r"task\.enqueue"):
        plan(S[0])


# -- the plan: results flow as in Celery's canvas ----------------------------------------------


def test_chain_gives_each_step_the_previous_result():
    steps = plan(chain(S[0], S[1], S[2]))
    assert steps.kind == "chain" and steps.result == "@2"
    assert shape(chain(S[0], S[1], S[2])) == [
        ("step 1", "", (), "(0,)"),
        ("step 2", "@0", (0,), "(1,)"),
        ("step 3", "@1", (1,), "(2,)"),
    ]


def test_group_runs_all_at_once_and_results_in_order():
    steps = plan(group(S[0], S[1], S[2]))
    assert [s.deps for s in steps.steps] == [(), (), ()]
    assert steps.result == "[@0,@1,@2]"


def test_chord_body_gathers_the_header_in_header_order():
    steps = plan(chord([S[0], S[1], S[2]], S[3]))
    assert [s.label for s in steps.steps] == ["header 1", "header 2", "header 3", "body"]
    body = steps.steps[3]
    assert (body.input, body.deps, body.gathers) == ("[@0,@1,@2]", (0, 1, 2), True)
    assert steps.result == "@3"
    assert steps.dependents() == [[3], [3], [3], []]


def test_nesting_follows_celery():
    # chain(a, group(b, c), d): b and c each get a's result; d gets [b, c] (a chord).
    assert shape(chain(S[0], group(S[1], S[2]), S[3])) == [
        ("step 1", "", (), "(0,)"),
        ("member 1", "@0", (0,), "(1,)"),
        ("member 2", "@0", (0,), "(2,)"),
        ("step 3", "[@1,@2]", (1, 2), "(3,)"),
    ]
    # A chord in a chain: its header gets the previous result; the chain goes on with the
    # body's. A chain in a chord header counts as its last step.
    nested = chain(S[0], chord([chain(S[1], S[2]), S[3]], S[4]), S[5])
    assert shape(nested) == [
        ("step 1", "", (), "(0,)"),
        ("step 1", "@0", (0,), "(1,)"),
        ("step 2", "@1", (1,), "(2,)"),
        ("header 2", "@0", (0,), "(3,)"),
        ("body", "[@2,@3]", (2, 3), "(4,)"),
        ("step 3", "@4", (4,), "(5,)"),
    ]
    assert plan(group(group(S[0], S[1]), S[2])).result == "[[@0,@1],@2]"


def test_a_step_after_a_failed_single_result_is_not_gathering():
    steps = plan(chain(S[0], S[1])).steps
    assert steps[1].gathers is False


def test_size_limits():
    with pytest.raises(ValueError, match="at most 5000"):
        plan(group(a.s(i) for i in range(5001)))
    deep: Any = S[0]
    for _ in range(40):
        deep = chain(deep, S[1])
    with pytest.raises(ValueError, match="nest at most 32"):
        plan(deep)


# -- JSON descriptions ------------------------------------------------------------------


def test_descriptions_round_trip():
    node = chain(S[0], chord([S[1], group(S[2], S[3])], a.s(x="y")))
    assert from_description(to_description(node)) == node


def test_a_call_description_needs_no_kind():
    assert from_description({"task": "t", "args": [1], "kwargs": {"k": 2}}) == Signature(
        "t", (1,), {"k": 2}
    )


@pytest.mark.parametrize(
    "data, where",
    [
        ({"kind": "loop"}, r"workflow.kind: 'loop'"),
        ({"kind": "chain", "steps": []}, r"workflow.steps: expected a non-empty list"),
        ({"kind": "chain", "steps": [{"task": ""}]}, r"workflow.steps\[0\].task"),
        ({"kind": "group", "members": [{"task": "t", "args": {}}]}, r"members\[0\].args"),
        ({"kind": "chord", "header": [{"task": "t"}]}, r"workflow.body: expected an object"),
        ({"kind": "chain", "members": []}, r"unknown key\(s\) members for a chain"),
        ([1], r"workflow: expected an object"),
    ],
)
def test_bad_descriptions_name_the_bad_part(data, where):
    with pytest.raises(ValueError, match=where):
        from_description(data)


# -- the handle --------------------------------------------------------------------------


def member(job_id: str, state: str, result: Any = None, **more: str) -> dict[str, str]:
    record = {"id": job_id, "task": "unit.wf.a", "profile": "p", "backend": "rq", "queue": "p"}
    record.update(state=state, workflow_id="wf1", created_at="1000", **more)
    if result is not None:
        record["result"] = codec.dumps(result)
    return record


class FakeSource:
    """Plays back a list of (workflow record, member records), one per read."""

    def __init__(self, reads: list[tuple[dict[str, str], list[dict[str, str]]]]) -> None:
        self.reads = reads
        self.canceled: list[str] = []

    @property
    def jobs(self) -> Any:
        return None

    def read_workflow(
        self, workflow_id: str
    ) -> tuple[Mapping[str, str], Sequence[Mapping[str, str]]] | None:
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]

    def cancel_workflow(self, workflow_id: str) -> None:
        self.canceled.append(workflow_id)


WF = {"id": "wf1", "kind": "group", "mode": "per-step", "created_at": "1700000000000"}


def test_aggregate_state():
    assert aggregate_state("queued", ["queued", "scheduled"]) == "queued"
    assert aggregate_state("queued", ["succeeded", "scheduled"]) == "running"
    assert aggregate_state("running", ["retrying"]) == "running"
    assert aggregate_state("failed", ["succeeded", "running"]) == "failed"


def test_wait_returns_the_result_and_to_dict_is_plain_json():
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    running = ({**WF, "state": "running"}, [member("j1", "running"), member("j2", "queued")])
    done = (
        {**WF, "state": "succeeded", "result": codec.dumps([(1, when), 2])},
        [member("j1", "succeeded", (1, when)), member("j2", "succeeded", 2)],
    )
    run = Workflow.from_records(*running, FakeSource([running, done]))  # type: ignore[arg-type]
    assert run.state == "running" and [j.id for j in run.jobs] == ["j1", "j2"]
    assert run.wait(5) == [(1, when), 2]
    out = run.to_dict()
    assert out["state"] == "succeeded" and out["result"] == [[1, "2026-01-02T00:00:00+00:00"], 2]
    assert out["counts"] == {"succeeded": 2} and out["created_at"] == "2023-11-14T22:13:20.000Z"
    assert [j["id"] for j in out["jobs"]] == ["j1", "j2"]


def test_wait_raises_workflow_failed_naming_the_member():
    error = {
        "type": "ValueError",
        "message": "boom",
        "job_id": "j2",
        "task": "unit.wf.a",
        "member": "member 2 (unit.wf.a, job j2)",
    }
    failed = (
        {**WF, "state": "failed", "result": "[4,null]", "error": codec.dumps(error)},
        [member("j1", "succeeded", 4), member("j2", "failed")],
    )
    run = Workflow.from_records(*failed, FakeSource([failed]))  # type: ignore[arg-type]
    with pytest.raises(WorkflowFailed) as err:
        run.wait(5)
    assert isinstance(err.value, JobFailed)
    assert (err.value.job_id, err.value.type, err.value.message) == ("j2", "ValueError", "boom")
    assert err.value.workflow_id == "wf1" and err.value.result == [4, None]
    assert str(err.value) == (
        "workflow wf1 failed: member 2 (unit.wf.a, job j2) failed: ValueError: boom"
    )


def test_wait_times_out_and_cancel_goes_to_the_source():
    running = ({**WF, "state": "running"}, [member("j1", "running")])
    source = FakeSource([running])
    run = Workflow.from_records(*running, source)  # type: ignore[arg-type]
    with pytest.raises(JobTimeout, match="still running"):
        run.wait(0.05)
    run.cancel()
    assert source.canceled == ["wf1"]
