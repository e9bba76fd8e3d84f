"""Workflows as JSON, the form the HTTP API takes and gives::

{"kind": "chord", "header": [{"task": "app.analyze", "args": ["page-1"]}, ...],
 "body": {"task": "app.summarize"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import codec
from .errors import DescriptionError
from .settings import MAX_WORKFLOW_DEPTH as MAX_DEPTH
from .workflow import Chain, Chord, Group, Node, Signature

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
