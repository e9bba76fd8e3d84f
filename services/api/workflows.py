"""``/workflows``: submit a chain, group or chord of registered tasks; read or cancel it.

A workflow is described as JSON, nested to any depth (up to 32 levels, 5000 calls)::

    {"kind": "chord",
     "header": [{"task": "app.analyze", "args": ["page-1"]}, ...],
     "body": {"task": "app.summarize"}}
    {"kind": "chain", "steps": [{"task": ...}, {"kind": "group", "members": [...]}, ...]}

A call is ``{"task", "args", "kwargs"}`` (``"kind": "task"`` optional). Results flow as in
Celery's canvas (see router/workflow.py). Reads return the aggregate state, every member
job (the job JSON of /jobs) and the final result.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskrouter import codec
from taskrouter.backends import workflows
from taskrouter.errors import DescriptionError, PolicyError
from taskrouter.settings import MAX_WORKFLOW_DEPTH as MAX_DEPTH
from taskrouter.workflow_handle import Workflow
from taskrouter.workflow_json import from_description

from .deps import responses, runtime_of
from .errors import error
from .schemas import JobError, JobOut, State

router = APIRouter(prefix="/workflows", tags=["workflows"])

WorkflowId = Annotated[str, Path(description="the workflow id")]
# JSON levels of the deepest body that can be valid: two per level of workflow nesting
# (an object and its list of items), the call's object and its list of arguments, then
# an argument (the codec's limit).
MAX_BODY_DEPTH = 2 * MAX_DEPTH + 2 + codec.MAX_DEPTH
Kind = Literal["chain", "group", "chord"]


# Nested items are documented as objects of the same form rather than as a recursive
# schema (which OpenAPI tools, schemathesis among them, cannot generate from), and parsed
# by taskrouter.workflow_json.from_description, which locates any problem as precisely.
Item = Annotated[
    dict[str, Any],
    Field(
        description='a call {"task", "args", "kwargs"}, or a nested chain, group or chord '
        "(the same form as the body), up to 32 levels deep"
    ),
]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _valid_json(self) -> Any:
        # Before json.dumps, which recurses: a body nested about a thousand levels deep
        # still parses. Each call's arguments are held to the codec's own limit when the
        # workflow is encoded, naming the step and the argument.
        body = self.model_dump()
        if codec.deeper_than(body, MAX_BODY_DEPTH):
            raise ValueError(
                f"nested too deeply: a workflow nests at most {MAX_DEPTH} levels, and each "
                f"argument of a call at most {codec.MAX_DEPTH} levels of lists and objects"
            )
        # JSON allows a lone surrogate ("\ud800"), which no UTF-8 encoder accepts.
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("holds a lone surrogate (\\ud800-\\udfff): not valid UTF-8") from None
        return self


class ChainIn(_Shape):
    """Steps one after another; each gets the previous result as its first argument."""

    kind: Literal["chain"]
    steps: list[Item] = Field(min_length=1)


class GroupIn(_Shape):
    """Members all at once; the group's result is the list of theirs, in order."""

    kind: Literal["group"]
    members: list[Item] = Field(min_length=1)


class ChordIn(_Shape):
    """A header group, then a body that gets the list of the header's results."""

    kind: Literal["chord"]
    header: list[Item] = Field(min_length=1)
    body: Item


WorkflowIn = Annotated[ChainIn | GroupIn | ChordIn, Field(discriminator="kind")]


class WorkflowErrorOut(JobError):
    job_id: str = Field(description="the member that failed first")
    task: str
    member: str = Field(description='how messages name it, e.g. "step 2 (app.parse, job ...)"')


class WorkflowOut(BaseModel):
    """A workflow: its aggregate state, each member job in order, and its result."""

    id: str
    kind: Kind
    mode: Literal["celery", "per-step"]
    state: State
    created_at: str | None
    finished_at: str | None
    result: Any = Field(
        description="the chain's last result, the chord body's, or the group's list (null "
        "where a member did not succeed); null until the workflow ended"
    )
    error: WorkflowErrorOut | None
    counts: dict[str, int] = Field(description="how many members are in each state")
    jobs: list[JobOut]


def _workflow(run: Workflow, status: int = 200) -> JSONResponse:
    headers = {"Location": f"/workflows/{run.id}"} if status == 202 else None
    return JSONResponse(run.to_dict(), status_code=status, headers=headers)


@router.post(
    "",
    status_code=202,
    response_model=WorkflowOut,
    responses=responses(404, 413, 422, 503),
    summary="Submit a chain, group or chord of registered tasks",
)
def submit(body: WorkflowIn, request: Request) -> JSONResponse:
    """Creates a job for every call at once (queued, or scheduled while it waits for
    others) and starts the workflow; answers with it at once. 404 for an unknown task."""
    try:
        node = from_description(body.model_dump())
        return _workflow(workflows.enqueue(runtime_of(request), node), 202)
    except DescriptionError as exc:
        return error(422, [{"loc": ["body", *exc.loc], "msg": exc.problem, "type": "value_error"}])
    except (ValueError, PolicyError) as exc:  # too deep or large; a step the policy cannot run
        return error(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}])


@router.get(
    "/{workflow_id}",
    response_model=WorkflowOut,
    responses=responses(404, 503),
    summary="A workflow, its member jobs and its result",
)
def get(workflow_id: WorkflowId, request: Request) -> JSONResponse:
    return _workflow(workflows.get(runtime_of(request), workflow_id))


@router.post(
    "/{workflow_id}/cancel",
    response_model=WorkflowOut,
    responses=responses(404, 409, 503),
    summary="Cancel a workflow",
)
def cancel(workflow_id: WorkflowId, request: Request) -> JSONResponse:
    """Every member not yet finished is canceled (a running one is stopped, on either
    engine); the workflow ends ``canceled``. 409 when it already finished."""
    return _workflow(workflows.get(runtime_of(request), workflow_id).cancel())
