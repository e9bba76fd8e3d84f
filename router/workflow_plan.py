"""The plan of a workflow: its steps in order, what each waits for and what it gets.

``plan()`` flattens a workflow into its steps, each with the steps it waits for and a
template of its first argument (``"@3"``: step 3's result, ``"[@1,@2]"``: a list of
them). The backends run that plan; this module stays pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .settings import MAX_WORKFLOW_DEPTH as MAX_DEPTH
from .settings import MAX_WORKFLOW_MEMBERS as MAX_MEMBERS
from .workflow import Chain, Chord, Group, Node, Signature

Kind = Literal["chain", "group", "chord"]
Role = Literal["step", "member", "header", "body"]


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
