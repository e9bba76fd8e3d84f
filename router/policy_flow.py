"""Reading the flow-control keys of a profile in policies.yaml (``per_key``,
``retry_after``, ``budget``): the part of the policy reader that README's "Flow control
for paid APIs" documents, each problem reported with its line like the rest."""

from __future__ import annotations

from typing import Literal, cast

from yaml.nodes import Node, ScalarNode

from taskrouter.durations import format_duration
from taskrouter.errors import MAX_RETRY_AFTER
from taskrouter.policy import (
    BUDGET_ACTIONS,
    PAUSE_SCOPES,
    Budget,
    PauseScope,
    PerKey,
    RetryAfterPolicy,
)

from .policy_yaml import NodeReader, join, line_of, shown

BUDGET_KEYS = ("limit", "per", "per_key", "when_reached", "price")
RETRY_AFTER_KEYS = ("pause", "http_429", "default", "max")
PER_KEY_KEYS = ("key", "concurrency", "rate_limit", "weights")


class FlowReader(NodeReader):
    """The readers of a profile's flow-control keys; the policy reader is one."""

    def budget(self, node: Node, dotted: str) -> Budget | None:
        example = "limit and per, e.g. {limit: 50, per: 1d}"
        body = self.mapping(node, dotted, BUDGET_KEYS, example)
        if body is None:
            return None
        for required in ("limit", "per"):
            if required not in body:
                self.report(line_of(node), f"{dotted}.{required}", f"is required: {example}")
        limit = self.optional(body, dotted, "limit", self.amount, None)
        per = self.optional(body, dotted, "per", self.positive_duration, None)
        per_key = self.optional(body, dotted, "per_key", self.amount, None)
        price = self.optional(body, dotted, "price", self.amount, None)
        action = self.optional(
            body, dotted, "when_reached", self.choice_of(BUDGET_ACTIONS), "pause"
        )
        if (
            limit is None
            or per is None
            or action is None
            or ("per_key" in body and per_key is None)
        ):
            return None
        if per < 1:
            self.report(
                body["per"].line, f"{dotted}.per", "must be at least 1s: a budget is per window"
            )
            return None
        return Budget(limit, per, per_key, cast(Literal["pause", "refuse"], action), price)

    def amount(self, node: Node, dotted: str) -> float | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e15:
            return float(value)
        self.report(
            line_of(node), dotted, f"must be a positive amount, e.g. 50 or 0.75; got {shown(node)}"
        )
        return None

    def retry_after(self, node: Node, dotted: str) -> RetryAfterPolicy | None:
        example = "pause, http_429, default and max, e.g. {pause: key, http_429: true}"
        body = self.mapping(node, dotted, RETRY_AFTER_KEYS, example)
        if body is None:
            return None
        base = RetryAfterPolicy()
        pause = self.optional(body, dotted, "pause", self.choice_of(PAUSE_SCOPES), base.pause)
        http_429 = self.optional(body, dotted, "http_429", self.flag, base.http_429)
        wait = self.optional(body, dotted, "default", self.retry_after_wait, base.default)
        count = self.optional(body, dotted, "max", self.at_least_one, base.max)
        if pause is None or http_429 is None or wait is None or count is None:
            return None
        return RetryAfterPolicy(cast(PauseScope, pause), http_429, wait, count)

    def retry_after_wait(self, node: Node, dotted: str) -> float | None:
        wait = self.duration(node, dotted)
        if wait is not None and wait > MAX_RETRY_AFTER:
            self.report(
                line_of(node),
                dotted,
                f"{format_duration(wait)} is longer than a RetryAfter may wait (1d): "
                "a longer wait is a schedule (task.using(delay=...))",
            )
            return None
        return wait

    def flag(self, node: Node, dotted: str) -> bool | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool):
            return value
        self.report(line_of(node), dotted, f"must be true or false; got {shown(node)}")
        return None

    def per_key(self, node: Node, dotted: str) -> PerKey | None:
        example = "key, concurrency and rate_limit, e.g. {key: tenant, concurrency: 4}"
        body = self.mapping(node, dotted, PER_KEY_KEYS, example)
        if body is None:
            return None
        key = self.optional(body, dotted, "key", self.argument_name, None)
        cap = self.optional(body, dotted, "concurrency", self.at_least_one, None)
        rate = self.optional(body, dotted, "rate_limit", self.rate, None)
        no_weights: tuple[tuple[str, int], ...] = ()
        weights = self.optional(body, dotted, "weights", self.weights, no_weights)
        if ("key" in body and key is None) or ("concurrency" in body and cap is None):
            return None
        if ("rate_limit" in body and rate is None) or weights is None:
            return None
        return PerKey(key, cap, rate, weights)

    def weights(self, node: Node, dotted: str) -> tuple[tuple[str, int], ...] | None:
        body = self.mapping(node, dotted, None, "limit keys and their weights, e.g. {gold: 3}")
        if body is None:
            return None
        found = [(k, self.integer(e.value, join(dotted, k), 1)) for k, e in body.items()]
        if any(w is None for _, w in found):
            return None
        return tuple((k, w) for k, w in found if w is not None)

    def argument_name(self, node: Node, dotted: str) -> str | None:
        text = str(node.value) if isinstance(node, ScalarNode) else ""
        if isinstance(node, ScalarNode) and text.isidentifier():
            return text
        self.report(
            line_of(node),
            dotted,
            f"must name an argument of the task (a Python identifier), e.g. tenant; "
            f"got {shown(node)}",
        )
        return None
