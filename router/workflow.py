"""Workflows: signatures, chains, groups and chords of them, and the Workflow handle.

Results flow as in Celery's canvas, whichever mode runs the workflow: a chain step gets
the previous step's result as its first positional argument; a step after a group (a
chord body) gets the list of the group's results, in the group's order; every member of
a group (or chord header) that follows a step gets that step's result. Nesting follows
the same rules: a chain's result is its last step's, a chord's is its body's, a group's
is the list of its members' results.

``plan()`` flattens a workflow into its steps, each with the steps it waits for and a
template of its first argument (``"@3"``: step 3's result, ``"[@1,@2]"``: a list of
them). The backends run that plan; this module stays pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, cast

from . import codec
from .errors import JobFailed, JobNotFound
from .job import Job, JobSource, iso, number_or_none, wait_until_finished
from .states import CANCELED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED

Kind = Literal["chain", "group", "chord"]
Role = Literal["step", "member", "header", "body"]

MAX_MEMBERS = 5000  # one workflow is created by one Redis script; keep it a sane size
MAX_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Signature:
    """A call of a registered task, to be run later as a workflow step (``task.s(...)``)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __or__(self, other: Node) -> Chain:
        return chain(self, other)


class _Composite:
    """What chains, groups and chords share: ``enqueue()`` and ``|``."""

    __slots__ = ()

    def enqueue(self) -> Workflow:
        """Create every member's job record, start the workflow, and return its handle."""
        from taskrouter.backends.workflows import enqueue

        from ._runtime import current

        return enqueue(current(), cast("Node", self))

    def __or__(self, other: Node) -> Chain:
        return chain(cast("Node", self), other)


@dataclass(frozen=True, slots=True)
class Chain(_Composite):
    """Steps run one after another; each gets the previous one's result first."""

    steps: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Group(_Composite):
    """Members run in parallel; the group's result is the list of their results."""

    members: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Chord(_Composite):
    """A header group, then a body that gets the list of the header's results."""

    header: tuple[Node, ...]
    body: Node


Node: TypeAlias = Signature | Chain | Group | Chord
_NODES = (Signature, Chain, Group, Chord)


def _items(items: tuple[Any, ...], what: str) -> tuple[Node, ...]:
    # chain(a, b) and chain([a, b]) alike, as Celery; group(x for x in ...) too.
    if len(items) == 1 and not isinstance(items[0], _NODES) and isinstance(items[0], Iterable):
        items = tuple(items[0])
    for i, item in enumerate(items):
        _check(item, f"{what}[{i}]")
    if not items:
        raise ValueError(f"an empty {what} has nothing to run")
    return items


def _check(item: Any, where: str) -> None:
    if not isinstance(item, _NODES):
        hint = " (use task.s(...) for a step)" if callable(item) else ""
        raise TypeError(
            f"{where} is {type(item).__name__}, not a signature, chain, group or chord{hint}"
        )


def chain(*steps: Node | Iterable[Node]) -> Chain:
    """``chain(a.s(x), b.s(), c.s())``: a, then b(a's result), then c(b's result)."""
    return Chain(_items(steps, "chain"))


def group(*members: Node | Iterable[Node]) -> Group:
    """``group(a.s(1), a.s(2))`` or ``group(a.s(d) for d in docs)``: all at once."""
    return Group(_items(members, "group"))


def chord(header: Group | Iterable[Node], body: Node) -> Chord:
    """``chord([a.s(p) for p in pages], summarize.s())``: summarize([results in order])."""
    members = header.members if isinstance(header, Group) else _items((header,), "chord header")
    _check(body, "chord body")
    return Chord(members, body)


# -- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One task call of a workflow, as the backends run it."""

    index: int  # 0-based, depth first: a chord's header members come before its body
    signature: Signature
    role: Role
    position: int  # 1-based, within its chain, group or chord header (a body's is 1)
    deps: tuple[int, ...]  # the steps whose results it waits for
    input: str  # template of its first argument: "" none, "@3", "[@1,@2]", nested lists

    @property
    def label(self) -> str:
        """How messages name it: "step 2", "member 3", "header 1", "body"."""
        return "body" if self.role == "body" else f"{self.role} {self.position}"

    @property
    def gathers(self) -> bool:
        """True when it gets a list of results: it fails, not cancels, when one failed."""
        return self.input.startswith("[")


@dataclass(frozen=True, slots=True)
class Plan:
    kind: Kind
    steps: tuple[Step, ...]
    result: str  # template of the workflow's final result

    def dependents(self) -> list[list[int]]:
        """For each step, the steps that wait for it."""
        after: list[list[int]] = [[] for _ in self.steps]
        for step in self.steps:
            for dep in step.deps:
                after[dep].append(step.index)
        return after


@dataclass(frozen=True, slots=True)
class _Ref:
    template: str
    deps: tuple[int, ...]


_NOTHING = _Ref("", ())


def kind_of(node: Node) -> Kind:
    if isinstance(node, Chain):
        return "chain"
    if isinstance(node, Group):
        return "group"
    if isinstance(node, Chord):
        return "chord"
    raise TypeError("a workflow is a chain, group or chord (enqueue one call with task.enqueue)")


def plan(node: Node) -> Plan:
    """The steps of a workflow, in order, with what each waits for and gets."""
    kind = kind_of(node)
    steps: list[Step] = []
    result = _place(node, _NOTHING, ("step", 1), steps, 0)
    return Plan(kind, tuple(steps), result.template)


def _place(
    node: Node, incoming: _Ref, where: tuple[Role, int], out: list[Step], depth: int
) -> _Ref:
    # ``where``: the role and position a single call here gets (a nested chain, group or
    # chord gives its own to its calls).
    if depth > MAX_DEPTH:
        raise ValueError(f"a workflow may nest at most {MAX_DEPTH} levels deep")
    if isinstance(node, Signature):
        if len(out) >= MAX_MEMBERS:
            raise ValueError(f"a workflow has at most {MAX_MEMBERS} task calls")
        index = len(out)
        out.append(Step(index, node, where[0], where[1], incoming.deps, incoming.template))
        return _Ref(f"@{index}", (index,))
    if isinstance(node, Chain):
        ref = incoming
        for i, step in enumerate(node.steps, 1):
            ref = _place(step, ref, ("step", i), out, depth + 1)
        return ref
    if isinstance(node, Group):
        members = enumerate(node.members, 1)
        return _gather([_place(m, incoming, ("member", i), out, depth + 1) for i, m in members])
    headers = enumerate(node.header, 1)
    header = _gather([_place(m, incoming, ("header", i), out, depth + 1) for i, m in headers])
    return _place(node.body, header, ("body", 1), out, depth + 1)


def _gather(refs: Sequence[_Ref]) -> _Ref:
    deps = tuple(dict.fromkeys(d for ref in refs for d in ref.deps))
    return _Ref("[" + ",".join(ref.template for ref in refs) + "]", deps)


# -- JSON descriptions (the HTTP API) -----------------------------------------------------


class DescriptionError(ValueError):
    """Raised when a JSON description of a workflow is invalid; ``loc`` locates the part
    (``("steps", 2, "task")``)."""

    def __init__(self, loc: tuple[str | int, ...], problem: str) -> None:
        self.loc = loc
        self.problem = problem
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        super().__init__(f"workflow{where}: {problem}")


_DESCRIPTION_KEYS = {
    "task": {"kind", "task", "args", "kwargs"},
    "chain": {"kind", "steps"},
    "group": {"kind", "members"},
    "chord": {"kind", "header", "body"},
}


def from_description(data: Any, loc: tuple[str | int, ...] = ()) -> Node:
    """A node from its JSON description; DescriptionError names the bad part.

    ``{"task": NAME, "args": [...], "kwargs": {...}}`` is a call ("kind": "task" optional);
    ``{"kind": "chain", "steps": [...]}``, ``{"kind": "group", "members": [...]}`` and
    ``{"kind": "chord", "header": [...], "body": {...}}`` nest up to 32 levels deep.
    """
    if len(loc) > 2 * MAX_DEPTH:
        raise DescriptionError(loc, f"a workflow may nest at most {MAX_DEPTH} levels deep")
    if not isinstance(data, Mapping):
        raise DescriptionError(loc, "expected an object")
    kind = data.get("kind", "task")
    keys = _DESCRIPTION_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise DescriptionError((*loc, "kind"), f"{kind!r} is not one of task, chain, group, chord")
    extra = sorted(str(k) for k in set(data) - keys)
    if extra:
        raise DescriptionError(loc, f"unknown key(s) {', '.join(extra)} for a {kind}")
    if kind == "task":
        return _described_call(data, loc)
    if kind == "chord":
        header = _described_list(data.get("header"), (*loc, "header"))
        return Chord(header, from_description(data.get("body"), (*loc, "body")))
    name = "steps" if kind == "chain" else "members"
    items = _described_list(data.get(name), (*loc, name))
    return Chain(items) if kind == "chain" else Group(items)


def _described_call(data: Mapping[str, Any], loc: tuple[str | int, ...]) -> Signature:
    name, args, kwargs = data.get("task"), data.get("args", []), data.get("kwargs", {})
    if not isinstance(name, str) or not name:
        raise DescriptionError((*loc, "task"), "expected a task name")
    if not isinstance(args, list):
        raise DescriptionError((*loc, "args"), "expected a list")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise DescriptionError((*loc, "kwargs"), "expected an object")
    return Signature(name, tuple(args), dict(kwargs))


def _described_list(value: Any, loc: tuple[str | int, ...]) -> tuple[Node, ...]:
    if not isinstance(value, list) or not value:
        raise DescriptionError(loc, "expected a non-empty list")
    return tuple(from_description(item, (*loc, i)) for i, item in enumerate(value))


def to_description(node: Node) -> dict[str, Any]:
    """The JSON description of a node (arguments as plain JSON)."""
    if isinstance(node, Signature):
        return {
            "kind": "task",
            "task": node.task,
            "args": codec.plain(list(node.args)),
            "kwargs": codec.plain(node.kwargs),
        }
    if isinstance(node, Chain):
        return {"kind": "chain", "steps": [to_description(s) for s in node.steps]}
    if isinstance(node, Group):
        return {"kind": "group", "members": [to_description(m) for m in node.members]}
    return {
        "kind": "chord",
        "header": [to_description(m) for m in node.header],
        "body": to_description(node.body),
    }


# -- the handle -------------------------------------------------------------------------


class WorkflowNotFound(JobNotFound):
    """Raised when a workflow id was never issued, or its record has expired."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id)
        self.args = (f"workflow {workflow_id!r} not found",)


class WorkflowFailed(JobFailed):
    """Raised by Workflow.wait() when the workflow failed or was canceled.

    ``job_id``, ``type`` and ``message`` are those of the member that failed first;
    ``result`` holds what the workflow produced anyway (a group's partial results).
    """

    def __init__(
        self,
        workflow_id: str,
        state: str,
        error: Mapping[str, Any],
        result: Any = None,
    ) -> None:
        super().__init__(
            str(error.get("job_id") or workflow_id),
            state,
            str(error.get("type", "")),
            str(error.get("message", "")),
        )
        self.workflow_id = workflow_id
        self.member = str(error.get("member", ""))
        self.result = result

    def __str__(self) -> str:
        head = f"workflow {self.workflow_id} {self.state}"
        if not self.member:
            return f"{head}: {self.message}"
        if self.type == "Canceled":
            return f"{head}: {self.member} was canceled"
        return f"{head}: {self.member} failed: {self.type}: {self.message}"


class WorkflowSource(Protocol):
    """Where a Workflow reads its records and sends its commands."""

    @property
    def jobs(self) -> JobSource: ...

    def read_workflow(
        self, workflow_id: str
    ) -> tuple[Mapping[str, str], Sequence[Mapping[str, str]]] | None: ...

    def cancel_workflow(self, workflow_id: str) -> None: ...


@dataclass(slots=True)
class Workflow:
    """A chain, group or chord that was enqueued; one job per task call in ``jobs``."""

    id: str
    kind: str
    mode: str  # "celery" (a native canvas) or "per-step"
    state: str
    jobs: list[Job]
    created_at: float | None = None
    finished_at: float | None = None
    _result: str | None = field(default=None, repr=False)
    _error: Mapping[str, Any] | None = field(default=None, repr=False)
    _source: WorkflowSource | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_records(
        cls,
        record: Mapping[str, str],
        members: Sequence[Mapping[str, str]],
        source: WorkflowSource | None = None,
    ) -> Workflow:
        jobs = [Job.from_record(m, source.jobs if source else None) for m in members]
        error = record.get("error")
        return cls(
            id=record["id"],
            kind=record.get("kind", ""),
            mode=record.get("mode", ""),
            state=aggregate_state(record.get("state", QUEUED), [j.state for j in jobs]),
            jobs=jobs,
            created_at=number_or_none(record.get("created_at")),
            finished_at=number_or_none(record.get("finished_at")),
            _result=record.get("result") or None,
            _error=json.loads(error) if error else None,
            _source=source,
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def result(self) -> Any:
        """The final result: the chain's last step's, the chord body's, or the list of a
        group's (None where a member did not succeed). None until the workflow ended."""
        return None if self._result is None else codec.loads(self._result)

    @property
    def error(self) -> dict[str, Any] | None:
        """The first failure: ``type``, ``message``, ``job_id``, ``task`` and ``member``."""
        return None if self._error is None else dict(self._error)

    def _require_source(self) -> WorkflowSource:
        if self._source is None:
            raise RuntimeError("this Workflow was built without a runtime; use get_workflow(id)")
        return self._source

    def refresh(self) -> Workflow:
        """Re-read the workflow and every member; returns self."""
        source = self._require_source()
        records = source.read_workflow(self.id)
        if records is None:
            raise WorkflowNotFound(self.id)
        fresh = Workflow.from_records(*records, source)
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(fresh, name))
        return self

    def wait(self, timeout: float | None = 60.0, *, poll: float = 0.005) -> Any:
        """Block until the workflow ends; return its result or raise WorkflowFailed (a
        JobFailed naming the member that failed). JobTimeout after ``timeout`` seconds."""
        wait_until_finished(self, timeout, poll, f"workflow {self.id}")
        if self.state == SUCCEEDED:
            return self.result
        error = self._error or {"type": "Canceled", "message": "the workflow was canceled"}
        raise WorkflowFailed(self.id, self.state, error, self.result)

    def cancel(self) -> Workflow:
        """Cancel every member not yet finished (running ones are stopped); returns self."""
        self._require_source().cancel_workflow(self.id)
        return self.refresh()

    def to_dict(self) -> dict[str, Any]:
        """The workflow as plain JSON: aggregate state, each member job, the result."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        return {
            "id": self.id,
            "kind": self.kind,
            "mode": self.mode,
            "state": self.state,
            "created_at": iso(self.created_at),
            "finished_at": iso(self.finished_at),
            "result": None if self._result is None else codec.plain(self.result),
            "error": None if self._error is None else codec.plain(dict(self._error)),
            "counts": counts,
            "jobs": [job.to_dict() for job in self.jobs],
        }


def aggregate_state(stored: str, member_states: Iterable[str]) -> str:
    """The workflow's state: as stored once it ended; before that, running as soon as any
    member started, else queued."""
    if stored in FINISHED:
        return stored
    started = {RUNNING, "retrying", SUCCEEDED, FAILED, CANCELED}
    return RUNNING if any(s in started for s in member_states) else QUEUED


def get_workflow(workflow_id: str) -> Workflow:
    """The workflow with this id, from any process; WorkflowNotFound if never issued."""
    from taskrouter.backends.workflows import get

    from ._runtime import current

    return get(current(), workflow_id)
