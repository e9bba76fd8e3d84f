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

import os
from typing import NamedTuple, cast

from taskrouter.classify import classify
from taskrouter.derive import lane_problems, visibility_problems
from taskrouter.durations import format_duration
from taskrouter.errors import PolicyError, PolicyProblem
from taskrouter.policy import (
    BACKEND_CHOICES,
    KINDS,
    SHAPES,
    WORKFLOW_MODES,
    BackendChoice,
    Kind,
    PerKey,
    Policy,
    Profile,
    Retries,
    RetryAfterPolicy,
    Routing,
    Shape,
    WorkflowMode,
)

from .policy_adaptive import read_adaptive
from .policy_flow import FlowReader
from .policy_yaml import (
    MAX_FILE_BYTES,
    NAME_RE,
    NAME_RULE,
    Entry,
    line_of,
    shown,
)
from .schedule_file import read_schedules

SUPPORTED_VERSION = 1
TOP_KEYS = ("version", "routing", "defaults", "profiles", "schedules")
ROUTING_KEYS = ("long_after", "workflows", "celery_visibility_timeout", "adaptive")
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
    "retry_after",
    "per_key",
    "budget",
)
RETRIES_KEYS = ("max", "backoff")

# Keys kombu's Redis transport keeps for itself: a Celery queue of that name would
# collide with them (WRONGTYPE errors, lost messages).
KOMBU_RESERVED_QUEUES = ("unacked", "unacked_index", "unacked_mutex")


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


class _Reader(FlowReader):
    """Walks the sections of one policy, collecting every problem it finds."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._routing_ok = True
        # Where each profile's timeout is written (or the profile, when inherited).
        self._timeout_lines: dict[str, int | None] = {}
        self._queue_lines: dict[str, int | None] = {}

    def read(self, text: str) -> Policy | None:
        root = self.compose(text)
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
        schedules = read_schedules(self, top.get("schedules"))
        policy = Policy(path=self.path, routing=routing, profiles=profiles, schedules=schedules)
        if self._routing_ok:
            self._check_visibility(policy)
        return policy

    def _version(self, entry: Entry) -> None:
        node = entry.value
        if self.whole_number(node) == SUPPORTED_VERSION:
            return
        self.report(
            line_of(node),
            "version",
            f"unsupported version {shown(node)}: this taskrouter reads version "
            f"{SUPPORTED_VERSION} files; write version: {SUPPORTED_VERSION}",
        )

    # -- sections ----------------------------------------------------------------

    def _routing(self, entry: Entry | None) -> Routing:
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
        adaptive = read_adaptive(self, body.get("adaptive"))
        self._routing_ok = len(self.problems) == before
        return Routing(
            long_after=long_after if long_after is not None else 30.0,
            workflows=_workflow_mode(workflows),
            celery_visibility_timeout=window,
            adaptive=adaptive,
        )

    def _defaults(self, entry: Entry | None) -> _Defaults:
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
        self, entry: Entry | None, routing: Routing, defaults: _Defaults
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
        self, name: str, entry: Entry, routing: Routing, defaults: _Defaults
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
        self, name: str, line: int, body: dict[str, Entry], defaults: _Defaults
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
        retry_after = self.optional(body, at, "retry_after", self.retry_after, RetryAfterPolicy())
        per_key = self.optional(body, at, "per_key", self.per_key, PerKey())
        budget = self.optional(body, at, "budget", self.budget, None)
        if "budget" in body and budget is None:
            return None
        if (
            latency is None
            or shape is None
            or backend is None
            or kind is None
            or queue is None
            or timeout is None
            or retries is None
            or keep is None
            or retry_after is None
            or per_key is None
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
            retry_after=retry_after,
            per_key=per_key,
            budget=budget,
            line=line,
        )

    # -- combinations --------------------------------------------------------------

    def _check_profile(self, profile: Profile, body: dict[str, Entry], routing: Routing) -> None:
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


def _workflow_mode(value: str | None) -> WorkflowMode:
    return "per-step" if value == "per-step" else "celery"
