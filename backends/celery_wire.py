"""The Redis message of one dispatch of a job, built without ``send_task``.

Two messages to the same queue with the same time limits differ only in the task's name,
the job id and the dispatch number, the text shown for the arguments (``argsrepr``,
``kwargsrepr``: what Flower shows), and the few fields derived from them (the task id,
the delivery tag). Celery's ``send_task`` spends most of an enqueue's
client time (option merging, routing, the protocol-2 build, kombu's producer and
channel) producing that same message again. A ``Template`` is learned from a message
Celery itself built, on the first dispatch to each queue with each pair of limits, and
fills in those fields afterwards, so every other field stays exactly as Celery set it.

Learning checks itself: the template must rebuild the very message it learned from,
field for field, or it is not used (and every message keeps going through
``send_task``). The backend uses templates only where the broker is the job store's
Redis, and never while a receiver is connected to Celery's ``before_task_publish`` or
``after_task_publish`` signals (tracing integrations add headers there).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from .base import native_id

# The canvas part of a protocol-2 body, for a task with no callbacks or chain.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True, slots=True)
class Parent:
    """The Celery task a message is sent from, if any (Celery's root_id / parent_id)."""

    root_id: str
    parent_id: str


# What Flower and ``celery inspect`` show for a message's arguments: the job's own, not
# the (job id, dispatch) the message carries (see celery_backend.shown_arguments).
Shown = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Template:
    key: str  # the queue's Redis list, with kombu's global key prefix
    message: dict[str, Any]  # kombu's envelope as learned (body, headers, properties)

    def fill(
        self,
        job_id: str,
        dispatch: int,
        *,
        task: str,
        shown: Shown,
        reply_to: str,
        parent: Parent | None = None,
    ) -> str:
        """The message for dispatch ``dispatch`` of job ``job_id``, as kombu stores it."""
        nid = native_id(job_id, dispatch)
        body = json.dumps([[job_id, dispatch], {}, _EMBED]).encode()
        headers = self.message["headers"].copy()
        headers["task"] = task
        headers["id"] = nid
        headers["root_id"] = parent.root_id if parent else nid
        headers["parent_id"] = parent.parent_id if parent else None
        headers["argsrepr"], headers["kwargsrepr"] = shown
        properties = self.message["properties"].copy()
        if "argsrepr" in properties:  # send_task's argsrepr option lands here too
            properties["argsrepr"], properties["kwargsrepr"] = shown
        properties["correlation_id"] = nid
        properties["reply_to"] = reply_to
        properties["delivery_tag"] = str(uuid.uuid4())
        return json.dumps(
            {
                **self.message,
                "body": base64.b64encode(body).decode("ascii"),
                "headers": headers,
                "properties": properties,
            }
        )


def learn(
    commands: list[tuple[str, tuple[Any, ...]]],
    key_prefix: str,
    job_id: str,
    dispatch: int,
    task: str,
    shown: Shown,
) -> Template | None:
    """A template from the Redis commands kombu gave for one message, or None when
    they are not the one plain LPUSH this module knows how to rebuild (a queue with an
    expiry adds PEXPIREs; another kombu may do anything)."""
    if len(commands) != 1 or commands[0][0] != "lpush" or len(commands[0][1]) != 2:
        return None
    key, payload = commands[0][1]
    try:
        message = json.loads(payload)
        headers, properties = message["headers"], message["properties"]
    except (TypeError, ValueError, KeyError):
        return None
    if properties.get("body_encoding") != "base64":
        return None
    template = Template(key=key_prefix + str(key), message=message)
    parent = None
    if headers.get("parent_id"):
        parent = Parent(root_id=headers.get("root_id") or "", parent_id=headers["parent_id"])
    try:
        again = json.loads(
            template.fill(
                job_id,
                dispatch,
                task=task,
                shown=shown,
                reply_to=properties.get("reply_to", ""),
                parent=parent,
            )
        )
    except (TypeError, ValueError, AttributeError):
        return None
    again["properties"]["delivery_tag"] = properties.get("delivery_tag")
    if not _same_message(again, message):
        return None
    return template


def _same_message(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal envelopes, comparing the bodies decoded (base64 and JSON spacing aside)."""
    try:
        body_a = json.loads(base64.b64decode(a["body"]))
        body_b = json.loads(base64.b64decode(b["body"]))
    except (TypeError, ValueError, KeyError):
        return False
    return body_a == body_b and {**a, "body": None} == {**b, "body": None}
