"""The YAML side of reading a policy file: composing it into nodes within bounds, and a
reader of mappings and values that reports each problem with its line.

Every process reads its policy at start (workers, the API), so a hostile file must not
hang them: its size, its nesting and its number of nodes (with every alias and merge
expanded) are bounded (MAX_FILE_BYTES, MAX_DEPTH, MAX_NODES), each checked before PyYAML
does the work that the bound keeps small. ``policy_file.py`` reads the sections.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import CollectionEndEvent, CollectionStartEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskrouter.durations import ACCEPTED, format_duration, parse_duration, parse_rate
from taskrouter.errors import PolicyProblem
from taskrouter.policy import RateLimit, Retries
from taskrouter.settings import MAX_BACKOFF, MAX_KEEP_RESULTS, MAX_TIMEOUT

# A real policy is a few KB, nests 5 levels (profiles.NAME.retries.backoff[0]) and holds
# a few hundred nodes. Without bounds, PyYAML takes about 4 s per MB in pure Python,
# recurses once per level of nesting (a RecursionError near 1,000 levels), and expands
# ``<<`` merges by copying, exponentially in the number of chained merges.
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32  # levels of mappings and lists
MAX_NODES = 10_000  # as written, and again with every alias and merge expanded
# libyaml's parser when PyYAML was built with it: the same events and marks, about 30
# times faster than the pure-Python one, which stands in otherwise.
_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"

T = TypeVar("T")

RETRIES_KEYS = ("max", "backoff")
# Profile and queue names become Redis keys and RQ queue names.
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "1 to 64 letters, digits, '_' or '-' (it becomes a Redis key and a queue name)"


class Entry(NamedTuple):
    """One ``key: value`` of a mapping, with both nodes for their line numbers."""

    key: Node
    value: Node

    @property
    def line(self) -> int:
        return line_of(self.key)


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _eventline_of(event: Event) -> int | None:
    return None if event.start_mark is None else int(event.start_mark.line) + 1


def shown(node: Node) -> str:
    """The value as the user wrote it, for messages."""
    if isinstance(node, ScalarNode):
        text = str(node.value)
        if node.tag == _BOOL_TAG:
            return f"{text} (a boolean)"
        return text if text else "nothing"
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def hint(word: str, choices: Sequence[str]) -> str:
    # Case first: difflib finds nothing close between "RQ" and "rq".
    close = [c for c in choices if c.lower() == word.lower()]
    close = close or difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class NodeReader:
    """Reads the nodes of one file, collecting every problem it finds (subclassed by the
    policy's reader, which knows the sections)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[PolicyProblem] = []
        self._constructor = SafeConstructor()

    def report(self, line: int | None, key: str, message: str) -> None:
        self.problems.append(PolicyProblem(self.path, line, key, message))

    def compose(self, text: str) -> Node | None:
        if not self._bounded(text):
            return None
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            context = f" ({exc.context})" if exc.context else ""
            self.report(line, "", f"invalid YAML: {exc.problem}{context}: fix the syntax here")
            return None
        except yaml.YAMLError as exc:
            self.report(None, "", f"invalid YAML: {exc}: fix the syntax")
            return None
        if root is None:
            self.report(None, "", "the file is empty: write version: 1 and a profiles: mapping")
            return None
        return root if self._expands_within_bounds(root) else None

    def _bounded(self, text: str) -> bool:
        """Whether the file nests at most MAX_DEPTH levels and writes at most MAX_NODES
        nodes; from the parser's events, which come without recursion, and stopping at
        the first excess, before the composer (which recurses) sees the file."""
        depth = nodes = 0
        try:
            for event in yaml.parse(text, Loader=_LOADER):
                if isinstance(event, CollectionStartEvent):
                    depth += 1
                elif isinstance(event, CollectionEndEvent):
                    depth -= 1
                nodes += isinstance(event, NodeEvent)
                if depth > MAX_DEPTH:
                    self.report(_eventline_of(event), "", _TOO_DEEP)
                    return False
                if nodes > MAX_NODES:
                    self.report(_eventline_of(event), "", _TOO_MANY)
                    return False
        except yaml.YAMLError:
            pass  # composing reports it, with its line
        return True

    def _expands_within_bounds(self, root: Node) -> bool:
        """Whether the node graph, with every alias and merge expanded, holds at most
        MAX_NODES nodes and no alias inside the node it names; before any merge is
        flattened (flattening copies, so a chain of merges doubles at each step)."""
        sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, expanded
        path: set[int] = set()  # the nodes being expanded: an alias to one is a cycle
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                path.discard(id(node))
                sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
                if sizes[id(node)] > MAX_NODES:
                    self.report(line_of(node), "", _TOO_EXPANDED)
                    return False
                continue
            if id(node) in sizes:
                continue
            path.add(id(node))
            stack.append((node, True))
            for child in _children(node):
                if id(child) in path:
                    self.report(line_of(child), "", _CYCLE)
                    return False
                stack.append((child, False))
        return True

    # -- mappings --------------------------------------------------------------------

    def mapping(
        self,
        node: Node,
        dotted: str,
        allowed: Sequence[str] | None,
        example: str = "",
    ) -> dict[str, Entry] | None:
        """The entries of a mapping node, reporting duplicate and unknown keys.

        An empty value (``routing:`` alone) is an empty mapping. ``allowed`` None
        accepts any key (profile names).
        """
        if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
            return {}
        if not isinstance(node, MappingNode):
            self._not_a_mapping(node, dotted, allowed, example)
            return None
        self._check_duplicates(node, dotted)
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else line_of(node)
            self.report(line, dotted, f"invalid merge (<<): {exc.problem}: merge a mapping")
            return None
        found = entries(node)
        for key, entry in list(found.items()):
            if allowed is not None and key not in allowed:
                del found[key]
                self._unknown_key(entry, join(dotted, key), key, allowed)
        return found

    def _not_a_mapping(
        self, node: Node, dotted: str, allowed: Sequence[str] | None, example: str
    ) -> None:
        wanted = example or (", ".join(allowed) if allowed else "one entry per profile")
        where = "" if dotted else "the top level "
        self.report(
            line_of(node),
            dotted,
            f"{where}must be a mapping (key: value lines) of {wanted}; got {shown(node)}",
        )

    def _check_duplicates(self, node: MappingNode, dotted: str) -> None:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merged keys may be overridden; that is what merging is for
            if not isinstance(key_node, ScalarNode):
                self.report(
                    line_of(key_node), dotted, "keys must be plain names, not lists or maps"
                )
                continue
            key = str(key_node.value)
            if key in seen:
                self.report(
                    line_of(key_node),
                    join(dotted, key),
                    f"duplicate key (first at line {seen[key]}): YAML would silently keep "
                    "only this one; remove one of them",
                )
            else:
                seen[key] = line_of(key_node)

    def _unknown_key(self, entry: Entry, dotted: str, key: str, allowed: Sequence[str]) -> None:
        self.report(
            entry.line,
            dotted,
            f"unknown key {key!r}: {hint(key, allowed)}allowed here: {', '.join(allowed)}",
        )

    # -- values ------------------------------------------------------------------------

    def optional(
        self,
        body: dict[str, Entry],
        prefix: str,
        key: str,
        read: Callable[[Node, str], T | None],
        default: T | None,
    ) -> T | None:
        """The value of ``key`` read by ``read``, ``default`` when absent, None when bad."""
        entry = body.get(key)
        return read(entry.value, join(prefix, key)) if entry is not None else default

    def scalar(self, node: Node) -> object:
        """The Python value of a scalar node (yes -> True, 3 -> 3, 10m -> "10m").

        Raises ValueError for a tag SafeLoader refuses (``!!python/object``...).
        """
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise ValueError(f"{exc.problem}: write a plain value without a tag") from None

    def duration(self, node: Node, dotted: str) -> float | None:
        if not isinstance(node, ScalarNode):
            self.report(
                line_of(node), dotted, f"expected a duration, got {shown(node)}; use {ACCEPTED}"
            )
            return None
        try:
            return parse_duration(self.scalar(node))
        except ValueError as exc:
            self.report(line_of(node), dotted, str(exc))
            return None

    def positive_duration(self, node: Node, dotted: str) -> float | None:
        seconds = self.duration(node, dotted)
        if seconds == 0:
            self.report(line_of(node), dotted, "must be longer than 0s: set a positive duration")
            return None
        return seconds

    def timeout(self, node: Node, dotted: str) -> float | None:
        return self.at_most(
            self.positive_duration(node, dotted),
            MAX_TIMEOUT,
            node,
            dotted,
            "RQ can enforce (it sets signal.alarm, which takes at most 2**31 - 1 seconds)",
        )

    def keep_results(self, node: Node, dotted: str) -> float | None:
        return self.at_most(
            self.positive_duration(node, dotted),
            MAX_KEEP_RESULTS,
            node,
            dotted,
            "Redis can keep a record (its expiry is 2**53 ms at most, about 285,000 years)",
        )

    def delay(self, node: Node, dotted: str) -> float | None:
        return self.at_most(
            self.duration(node, dotted),
            MAX_BACKOFF,
            node,
            dotted,
            "a retry may wait (held to the timeout's bound, 2**31 - 1 seconds: a Celery "
            "canvas sends its retries with an ETA)",
        )

    def at_most(
        self, seconds: float | None, maximum: float, node: Node, dotted: str, what: str
    ) -> float | None:
        if seconds is None or seconds <= maximum:
            return seconds
        self.report(
            line_of(node),
            dotted,
            f"{shown(node)} is longer than {what}: set at most {format_duration(maximum)}",
        )
        return None

    def choice_of(self, options: Sequence[str]) -> Callable[[Node, str], str | None]:
        def read(node: Node, dotted: str) -> str | None:
            text = str(node.value) if isinstance(node, ScalarNode) else ""
            if text in options:
                return text
            self.report(
                line_of(node),
                dotted,
                f"{shown(node)!r} is not one of {', '.join(options)}: "
                f"{hint(text, options)}set one of those",
            )
            return None

        return read

    def queue_name(self, node: Node, dotted: str) -> str | None:
        text = str(node.value) if isinstance(node, ScalarNode) else ""
        if isinstance(node, ScalarNode) and NAME_RE.fullmatch(text):
            return text
        what = repr(text) if isinstance(node, ScalarNode) else shown(node)
        self.report(line_of(node), dotted, f"invalid queue name {what}: use {NAME_RULE}")
        return None

    def whole_number(self, node: Node) -> int | None:
        """The int a node holds, or None: not for floats, booleans or strings of digits."""
        if not isinstance(node, ScalarNode) or node.tag != _INT_TAG:
            return None
        try:
            value = self.scalar(node)
        except ValueError:  # an explicit !!int tag on something that is not a number
            return None
        return value if isinstance(value, int) else None

    def integer(self, node: Node, dotted: str, minimum: int) -> int | None:
        value = self.whole_number(node)
        if value is not None and value >= minimum:
            return value
        self.report(
            line_of(node), dotted, f"must be a whole number >= {minimum}; got {shown(node)}"
        )
        return None

    def at_least_one(self, node: Node, dotted: str) -> int | None:
        return self.integer(node, dotted, 1)

    def rate(self, node: Node, dotted: str) -> RateLimit | None:
        try:
            return parse_rate(self.scalar(node) if isinstance(node, ScalarNode) else None)
        except ValueError as exc:
            self.report(line_of(node), dotted, str(exc))
            return None

    def retries(self, node: Node, dotted: str) -> Retries | None:
        body = self.mapping(node, dotted, RETRIES_KEYS, "max and backoff, e.g. {max: 3}")
        if body is None:
            return None
        count = self.optional(body, dotted, "max", lambda n, d: self.integer(n, d, 0), 0)
        no_backoff: tuple[float, ...] = ()
        backoff = self.optional(body, dotted, "backoff", self.backoff, no_backoff)
        if count is None or backoff is None:
            return None
        if len(backoff) > count:
            self.report(
                body["backoff"].line,
                f"{dotted}.backoff",
                f"has {len(backoff)} values but {dotted}.max is {count}, so the last "
                f"{len(backoff) - count} would never be used: remove them or raise max "
                f"to {len(backoff)}",
            )
            return None
        return Retries(max=count, backoff=backoff)

    def backoff(self, node: Node, dotted: str) -> tuple[float, ...] | None:
        if not isinstance(node, SequenceNode):
            self.report(
                line_of(node),
                dotted,
                f"must be a list of durations, e.g. [10s, 60s]; got {shown(node)}",
            )
            return None
        delays = [self.delay(item, f"{dotted}[{i}]") for i, item in enumerate(node.value)]
        if any(delay is None for delay in delays):
            return None
        return tuple(delay for delay in delays if delay is not None)


_TOO_DEEP = (
    f"nested more than {MAX_DEPTH} levels deep here, taskrouter's limit for a policy (a "
    "policy needs 5: profiles.NAME.retries.backoff): flatten it"
)
_TOO_MANY = (
    f"the file writes more than {MAX_NODES} keys, values and list items by this line, "
    "taskrouter's limit for a policy (a real one has a few hundred): check that this is "
    "the policy file"
)
_TOO_EXPANDED = (
    f"this stands for more than {MAX_NODES} keys, values and list items once its aliases "
    "and << merges are expanded, taskrouter's limit for a policy (an alias or merge-key "
    "bomb?): merge smaller mappings, or write the values out"
)
_CYCLE = "an alias refers to a mapping or list that contains it: a policy cannot be infinite"


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def entries(node: Node) -> dict[str, Entry]:
    """Key -> entry of an (already flattened) mapping node; the last duplicate wins."""
    if not isinstance(node, MappingNode):
        return {}
    return {
        str(key.value): Entry(key, value)
        for key, value in node.value
        if isinstance(key, ScalarNode)
    }


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
