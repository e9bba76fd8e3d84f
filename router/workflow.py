"""Workflows: signatures, and chains, groups and chords of them.

Results flow as in Celery's canvas, whichever mode runs the workflow: a chain step gets
the previous step's result as its first positional argument; a step after a group (a
chord body) gets the list of the group's results, in the group's order; every member of
a group (or chord header) that follows a step gets that step's result. Nesting follows
the same rules: a chain's result is its last step's, a chord's is its body's, a group's
is the list of its members' results.

The parts of a workflow live in four modules: this one (the model and its builders),
``workflow_plan`` (the steps the backends run), ``workflow_json`` (the JSON form of the
HTTP API) and ``workflow_handle`` (the Workflow handle of an enqueued one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from .errors import DescriptionError, WorkflowFailed, WorkflowNotFound

if TYPE_CHECKING:
    from .workflow_handle import Workflow

__all__ = [
    "Chain",
    "Chord",
    "DescriptionError",
    "Group",
    "Node",
    "Signature",
    "WorkflowFailed",
    "WorkflowNotFound",
    "chain",
    "chord",
    "get_workflow",
    "group",
]


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
        from ._runtime import current

        return current().enqueue_workflow(cast("Node", self))

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


def get_workflow(workflow_id: str) -> Workflow:
    """The workflow with this id, from any process; WorkflowNotFound if never issued."""
    from ._runtime import current

    return current().get_workflow(workflow_id)
