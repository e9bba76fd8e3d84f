"""Reading and validating policies.yaml into a ``router.policy.Policy``.

The file is composed into YAML nodes (which keep their line numbers) and checked by
hand, so that every problem names the file, the line and the dotted key
(``profiles.enrichment.timeout``) and says what to change. All problems are collected
and raised together as one PolicyError: fixing a file should take one run, not ten.

Beyond types and ranges, the checks refuse what PyYAML or the engines would accept
silently and get wrong: duplicate keys (YAML keeps the last one), unknown keys (a typo
would otherwise fall back to a default), booleans where numbers are meant (``yes`` is
true in YAML 1.1), and combinations that cannot work (see ``_check_profile``).

``retries`` is one value: a profile's ``retries`` replaces ``defaults.retries`` as a
whole, and a missing ``max`` is 0. YAML anchors and ``<<`` merge keys work as usual.

Every process reads this file at start (workers, the API), so a hostile one must not
hang them: the file's size, its nesting and its number of nodes (with every alias and
merge expanded) are bounded (MAX_FILE_BYTES, MAX_DEPTH, MAX_NODES), each checked before
PyYAML does the work that the bound keeps small.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import CollectionEndEvent, CollectionStartEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskrouter.classify import classify
from taskrouter.derive import lane_problems, visibility_problems
from taskrouter.durations import ACCEPTED, format_duration, parse_duration, parse_rate
from taskrouter.errors import PolicyError, PolicyProblem
from taskrouter.policy import (
    BACKEND_CHOICES,
    KINDS,
    SHAPES,
    WORKFLOW_MODES,
    BackendChoice,
    Kind,
    Policy,
    Profile,
    RateLimit,
    Retries,
    Routing,
    Shape,
    WorkflowMode,
)
from taskrouter.settings import MAX_BACKOFF, MAX_KEEP_RESULTS, MAX_TIMEOUT

SUPPORTED_VERSION = 1
TOP_KEYS = ("version", "routing", "defaults", "profiles")
ROUTING_KEYS = ("long_after", "workflows", "celery_visibility_timeout")
DEFAULTS_KEYS = ("timeout", "retries", "keep_results")
PROFILE_KEYS = (
    "expected_latency",
    "shape",
    "backend",
    "kind",
    "queue",
    "timeout",
    "retries",
    "keep_results",
    "concurrency",
    "rate_limit",
)
RETRIES_KEYS = ("max", "backoff")

# Profile and queue names become Redis keys and RQ queue names.
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NAME_RULE = "1 to 64 letters, digits, '_' or '-' (it becomes a Redis key and a queue name)"
# Keys kombu's Redis transport keeps for itself: a Celery queue of that name would
# collide with them (WRONGTYPE errors, lost messages).
KOMBU_RESERVED_QUEUES = ("unacked", "unacked_index", "unacked_mutex")

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


class _Entry(NamedTuple):
    """One ``key: value`` of a mapping, with both nodes for their line numbers."""

    key: Node
    value: Node

    @property
    def line(self) -> int:
        return _line(self.key)


class _Defaults(NamedTuple):
    """The ``defaults`` section; None where that value is invalid (already reported)."""

    timeout: float | None = 300.0
    retries: Retries | None = Retries()
    keep_results: float | None = 86400.0


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy file at ``path``.

    Raises PolicyError listing every problem (a missing or unreadable file is one).
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # no more, however large the file
        if len(data) > MAX_FILE_BYTES:
            raise _file_error(shown, _too_large("file"))
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise _file_error(
            shown,
            "file not found: create it (see the README), or point TASKROUTER_POLICY or "
            "--policy at your policy file",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _file_error(
            shown, f"cannot read the file ({reason}): make it a readable UTF-8 text file"
        ) from None
    return parse_policy(text, shown)


def _file_error(path: str, message: str) -> PolicyError:
    return PolicyError([PolicyProblem(path, None, "", message)])


def _too_large(what: str) -> str:
    return (
        f"the {what} is over {MAX_FILE_BYTES // 1024} KiB ({MAX_FILE_BYTES} bytes), "
        "taskrouter's limit for a policy: a policy of even a thousand profiles is far "
        "smaller; check that this is the policy file"
    )


def parse_policy(text: str, path: str = "<string>") -> Policy:
    """Validate the policy in ``text``; ``path`` is the name used in messages.

    Raises PolicyError listing every problem, each as ``file:line: key: message``.
    """
    if len(text) > MAX_FILE_BYTES:
        raise _file_error(path, _too_large("policy"))
    reader = _Reader(path)
    policy = reader.read(text)
    if reader.problems or policy is None:
        # Stable sort: problems on one line keep the order they were found in.
        raise PolicyError(sorted(reader.problems, key=lambda p: p.line or 0))
    return policy


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _event_line(event: Event) -> int | None:
    return None if event.start_mark is None else int(event.start_mark.line) + 1


def _shown(node: Node) -> str:
    """The value as the user wrote it, for messages."""
    if isinstance(node, ScalarNode):
        text = str(node.value)
        if node.tag == _BOOL_TAG:
            return f"{text} (a boolean)"
        return text if text else "nothing"
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def _hint(word: str, choices: Sequence[str]) -> str:
    # Case first: difflib finds nothing close between "RQ" and "rq".
    close = [c for c in choices if c.lower() == word.lower()]
    close = close or difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class _Reader:
    """Walks the node tree of one file, collecting every problem it finds."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[PolicyProblem] = []
        self._constructor = SafeConstructor()
        self._routing_ok = True
        # Where each profile's timeout is written (or the profile, when inherited).
        self._timeout_lines: dict[str, int | None] = {}
        self._queue_lines: dict[str, int | None] = {}

    def report(self, line: int | None, key: str, message: str) -> None:
        self.problems.append(PolicyProblem(self.path, line, key, message))

    # -- the document ------------------------------------------------------------

    def read(self, text: str) -> Policy | None:
        root = self._compose(text)
        if root is None:
            return None
        top = self.mapping(root, "", TOP_KEYS, "version, routing, defaults and profiles")
        if top is None:
            return None
        if "version" in top:
            self._version(top["version"])
        routing = self._routing(top.get("routing"))
        defaults = self._defaults(top.get("defaults"))
        profiles = self._profiles(top.get("profiles"), routing, defaults)
        policy = Policy(path=self.path, routing=routing, profiles=profiles)
        if self._routing_ok:
            self._check_visibility(policy)
        return policy

    def _compose(self, text: str) -> Node | None:
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
                    self.report(_event_line(event), "", _TOO_DEEP)
                    return False
                if nodes > MAX_NODES:
                    self.report(_event_line(event), "", _TOO_MANY)
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
                    self.report(_line(node), "", _TOO_EXPANDED)
                    return False
                continue
            if id(node) in sizes:
                continue
            path.add(id(node))
            stack.append((node, True))
            for child in _children(node):
                if id(child) in path:
                    self.report(_line(child), "", _CYCLE)
                    return False
                stack.append((child, False))
        return True

    def _version(self, entry: _Entry) -> None:
        node = entry.value
        if self.whole_number(node) == SUPPORTED_VERSION:
            return
        self.report(
            _line(node),
            "version",
            f"unsupported version {_shown(node)}: this taskrouter reads version "
            f"{SUPPORTED_VERSION} files; write version: {SUPPORTED_VERSION}",
        )

    # -- sections ----------------------------------------------------------------

    def _routing(self, entry: _Entry | None) -> Routing:
        before = len(self.problems)
        body = self.mapping(entry.value, "routing", ROUTING_KEYS) if entry else {}
        body = body if body is not None else {}
        long_after = self.optional(body, "routing", "long_after", self.duration, 30.0)
        workflows = self.optional(
            body, "routing", "workflows", self.choice_of(WORKFLOW_MODES), "celery"
        )
        window = self.optional(
            body, "routing", "celery_visibility_timeout", self.positive_duration, None
        )
        self._routing_ok = len(self.problems) == before
        return Routing(
            long_after=long_after if long_after is not None else 30.0,
            workflows=_workflow_mode(workflows),
            celery_visibility_timeout=window,
        )

    def _defaults(self, entry: _Entry | None) -> _Defaults:
        body = self.mapping(entry.value, "defaults", DEFAULTS_KEYS) if entry else {}
        if body is None:
            return _Defaults(None, None, None)
        base = _Defaults()
        return _Defaults(
            timeout=self.optional(body, "defaults", "timeout", self.timeout, base.timeout),
            retries=self.optional(body, "defaults", "retries", self.retries, base.retries),
            keep_results=self.optional(
                body, "defaults", "keep_results", self.keep_results, base.keep_results
            ),
        )

    def _profiles(
        self, entry: _Entry | None, routing: Routing, defaults: _Defaults
    ) -> dict[str, Profile]:
        if entry is None:
            self.report(None, "profiles", "is required: add a profiles: mapping with one profile")
            return {}
        body = self.mapping(entry.value, "profiles", None)
        if body is None:
            return {}
        if not body:
            self.report(
                entry.line, "profiles", "is empty: add at least one profile with expected_latency"
            )
        profiles = {}
        for name, item in body.items():
            profile = self._profile(name, item, routing, defaults)
            if profile is not None:
                profiles[name] = profile
        return profiles

    def _profile(
        self, name: str, entry: _Entry, routing: Routing, defaults: _Defaults
    ) -> Profile | None:
        prefix = f"profiles.{name}"
        before = len(self.problems)
        if not NAME_RE.fullmatch(name):
            self.report(entry.line, prefix, f"invalid profile name: use {NAME_RULE}")
        body = self.mapping(entry.value, prefix, PROFILE_KEYS, "expected_latency and more")
        if body is None:
            return None
        if "expected_latency" not in body:
            self.report(
                entry.line,
                f"{prefix}.expected_latency",
                "is required: add how long a call usually takes, e.g. expected_latency: 2s",
            )
        profile = self._build_profile(name, entry.line, body, defaults)
        if profile is None or len(self.problems) > before:
            return None
        self._timeout_lines[name] = body["timeout"].line if "timeout" in body else entry.line
        self._queue_lines[name] = body["queue"].line if "queue" in body else entry.line
        self._check_profile(profile, body, routing)
        return profile

    def _build_profile(
        self, name: str, line: int, body: dict[str, _Entry], defaults: _Defaults
    ) -> Profile | None:
        """The profile, its missing values taken from ``defaults``; None if any is bad."""
        at = f"profiles.{name}"
        latency = self.optional(body, at, "expected_latency", self.duration, None)
        shape = self.optional(body, at, "shape", self.choice_of(SHAPES), "isolated")
        backend = self.optional(body, at, "backend", self.choice_of(BACKEND_CHOICES), "auto")
        kind = self.optional(body, at, "kind", self.choice_of(KINDS), "cpu")
        queue = self.optional(body, at, "queue", self.queue_name, name)
        timeout = self.optional(body, at, "timeout", self.timeout, defaults.timeout)
        retries = self.optional(body, at, "retries", self.retries, defaults.retries)
        keep = self.optional(body, at, "keep_results", self.keep_results, defaults.keep_results)
        concurrency = self.optional(body, at, "concurrency", self.at_least_one, None)
        rate_limit = self.optional(body, at, "rate_limit", self.rate, None)
        if (
            latency is None
            or shape is None
            or backend is None
            or kind is None
            or queue is None
            or timeout is None
            or retries is None
            or keep is None
        ):
            return None  # reported, here or in defaults
        return Profile(
            name=name,
            expected_latency=latency,
            shape=cast(Shape, shape),
            backend=cast(BackendChoice, backend),
            kind=cast(Kind, kind),
            queue=queue,
            timeout=timeout,
            retries=retries,
            keep_results=keep,
            concurrency=concurrency,
            rate_limit=rate_limit,
            line=line,
        )

    # -- combinations --------------------------------------------------------------

    def _check_profile(self, profile: Profile, body: dict[str, _Entry], routing: Routing) -> None:
        """Refuse settings that are each valid but cannot work together."""
        prefix = f"profiles.{profile.name}"
        if profile.timeout < profile.expected_latency:
            inherited = "" if "timeout" in body else " (inherited from defaults.timeout)"
            self.report(
                self._timeout_lines[profile.name],
                f"{prefix}.timeout",
                f"timeout {format_duration(profile.timeout)}{inherited} is shorter than "
                f"expected_latency {format_duration(profile.expected_latency)}, so a normal "
                f"call would be killed: set {prefix}.timeout to at least "
                f"{format_duration(profile.expected_latency)}",
            )
        if not self._routing_ok:
            return  # routing was reported; its fallback values would mislead these checks
        if (
            profile.backend == "rq"
            and profile.shape != "isolated"
            and routing.workflows == "celery"
        ):
            self.report(
                body["backend"].line,
                f"{prefix}.backend",
                f"backend: rq cannot run a {profile.shape} while routing.workflows is celery "
                "(workflows are native Celery canvases): set routing.workflows: per-step "
                "or use backend: celery",
            )
        if (
            profile.queue in KOMBU_RESERVED_QUEUES
            and classify(profile, routing).backend == "celery"
        ):
            self.report(
                body["queue"].line if "queue" in body else profile.line,
                f"{prefix}.queue",
                f"queue {profile.queue!r} is a key Celery's Redis transport uses for itself: "
                "set another queue name",
            )

    def _check_visibility(self, policy: Policy) -> None:
        self.problems.extend(lane_problems(policy, self._queue_lines))
        self.problems.extend(visibility_problems(policy, self._timeout_lines))

    # -- mappings --------------------------------------------------------------------

    def mapping(
        self,
        node: Node,
        dotted: str,
        allowed: Sequence[str] | None,
        example: str = "",
    ) -> dict[str, _Entry] | None:
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
            line = mark.line + 1 if mark else _line(node)
            self.report(line, dotted, f"invalid merge (<<): {exc.problem}: merge a mapping")
            return None
        entries = _entries(node)
        for key, entry in list(entries.items()):
            if allowed is not None and key not in allowed:
                del entries[key]
                self._unknown_key(entry, _join(dotted, key), key, allowed)
        return entries

    def _not_a_mapping(
        self, node: Node, dotted: str, allowed: Sequence[str] | None, example: str
    ) -> None:
        wanted = example or (", ".join(allowed) if allowed else "one entry per profile")
        where = "" if dotted else "the top level "
        self.report(
            _line(node),
            dotted,
            f"{where}must be a mapping (key: value lines) of {wanted}; got {_shown(node)}",
        )

    def _check_duplicates(self, node: MappingNode, dotted: str) -> None:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # merged keys may be overridden; that is what merging is for
            if not isinstance(key_node, ScalarNode):
                self.report(_line(key_node), dotted, "keys must be plain names, not lists or maps")
                continue
            key = str(key_node.value)
            if key in seen:
                self.report(
                    _line(key_node),
                    _join(dotted, key),
                    f"duplicate key (first at line {seen[key]}): YAML would silently keep "
                    "only this one; remove one of them",
                )
            else:
                seen[key] = _line(key_node)

    def _unknown_key(self, entry: _Entry, dotted: str, key: str, allowed: Sequence[str]) -> None:
        self.report(
            entry.line,
            dotted,
            f"unknown key {key!r}: {_hint(key, allowed)}allowed here: {', '.join(allowed)}",
        )

    # -- values ------------------------------------------------------------------------

    def optional(
        self,
        body: dict[str, _Entry],
        prefix: str,
        key: str,
        read: Callable[[Node, str], T | None],
        default: T | None,
    ) -> T | None:
        """The value of ``key`` read by ``read``, ``default`` when absent, None when bad."""
        entry = body.get(key)
        return read(entry.value, _join(prefix, key)) if entry is not None else default

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
                _line(node), dotted, f"expected a duration, got {_shown(node)}; use {ACCEPTED}"
            )
            return None
        try:
            return parse_duration(self.scalar(node))
        except ValueError as exc:
            self.report(_line(node), dotted, str(exc))
            return None

    def positive_duration(self, node: Node, dotted: str) -> float | None:
        seconds = self.duration(node, dotted)
        if seconds == 0:
            self.report(_line(node), dotted, "must be longer than 0s: set a positive duration")
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
            _line(node),
            dotted,
            f"{_shown(node)} is longer than {what}: set at most {format_duration(maximum)}",
        )
        return None

    def choice_of(self, options: Sequence[str]) -> Callable[[Node, str], str | None]:
        def read(node: Node, dotted: str) -> str | None:
            text = str(node.value) if isinstance(node, ScalarNode) else ""
            if text in options:
                return text
            self.report(
                _line(node),
                dotted,
                f"{_shown(node)!r} is not one of {', '.join(options)}: "
                f"{_hint(text, options)}set one of those",
            )
            return None

        return read

    def queue_name(self, node: Node, dotted: str) -> str | None:
        text = str(node.value) if isinstance(node, ScalarNode) else ""
        if isinstance(node, ScalarNode) and NAME_RE.fullmatch(text):
            return text
        shown = repr(text) if isinstance(node, ScalarNode) else _shown(node)
        self.report(_line(node), dotted, f"invalid queue name {shown}: use {NAME_RULE}")
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
        self.report(_line(node), dotted, f"must be a whole number >= {minimum}; got {_shown(node)}")
        return None

    def at_least_one(self, node: Node, dotted: str) -> int | None:
        return self.integer(node, dotted, 1)

    def rate(self, node: Node, dotted: str) -> RateLimit | None:
        try:
            return parse_rate(self.scalar(node) if isinstance(node, ScalarNode) else None)
        except ValueError as exc:
            self.report(_line(node), dotted, str(exc))
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
                _line(node),
                dotted,
                f"must be a list of durations, e.g. [10s, 60s]; got {_shown(node)}",
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


def _entries(node: Node) -> dict[str, _Entry]:
    """Key -> entry of an (already flattened) mapping node; the last duplicate wins."""
    if not isinstance(node, MappingNode):
        return {}
    return {
        str(key.value): _Entry(key, value)
        for key, value in node.value
        if isinstance(key, ScalarNode)
    }


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _workflow_mode(value: str | None) -> WorkflowMode:
    return "per-step" if value == "per-step" else "celery"
