"""Templates of Celery messages (backends/celery_wire.py), and the reading of kombu's
unacked entries (backends/celery_unacked.py), checked against the messages Celery itself
builds (a real Celery app on kombu's in-memory transport)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from celery import Celery

from taskrouter.backends.base import native_id, parse_native_id
from taskrouter.backends.celery_unacked import UNACKED, UNACKED_INDEX, task_id
from taskrouter.backends.celery_wire import Parent, Template, learn

QUEUE = "enrichment"
TASK = "app.tasks.analyze"
SHOWN = ("('doc-42',)", "{'lang': 'en'}")


@pytest.fixture(scope="module")
def app() -> Celery:
    app = Celery("wire-test", broker="memory://", set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_default_queue="x")
    return app


def celery_message(
    app: Celery, job_id: str, dispatch: int, task: str = TASK, shown: Any = SHOWN, **extra: Any
) -> dict[str, Any]:
    """The message send_task builds for a dispatch, as kombu would store it in Redis."""
    options: dict[str, Any] = {
        "argsrepr": shown[0],
        "kwargsrepr": shown[1],
        "args": (job_id, dispatch),
        "task_id": native_id(job_id, dispatch),
        "queue": QUEUE,
        "soft_time_limit": 600.0,
        "time_limit": 660.0,
        "ignore_result": True,
        **extra,
    }
    with app.producer_or_acquire() as producer:
        app.send_task(task, producer=producer, **options)
        message: dict[str, Any] = producer.channel._get(QUEUE)
    return message


def as_commands(message: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    return [("lpush", (QUEUE, json.dumps(message)))]


def same_but_delivery_tag(filled: str, message: dict[str, Any]) -> None:
    got = json.loads(filled)
    assert got["properties"].pop("delivery_tag") != message["properties"]["delivery_tag"]
    want = json.loads(json.dumps(message))
    want["properties"].pop("delivery_tag")
    body_got, body_want = (json.loads(base64.b64decode(m.pop("body"))) for m in (got, want))
    assert body_got == body_want
    assert got == want


def learned(app: Celery, prefix: str = "") -> Template:
    template = learn(as_commands(celery_message(app, "01a2", 1)), prefix, "01a2", 1, TASK, SHOWN)
    assert template is not None
    return template


@pytest.mark.parametrize("dispatch", [1, 2, 17])
def test_a_filled_message_is_the_one_celery_builds_for_that_dispatch(app, dispatch):
    template = learned(app)
    job_id = "01a2320b7691ffe7a1baab185944"
    want = celery_message(app, job_id, dispatch)
    reply_to = want["properties"]["reply_to"]
    filled = template.fill(job_id, dispatch, task=TASK, shown=SHOWN, reply_to=reply_to)
    same_but_delivery_tag(filled, want)
    assert json.loads(filled)["headers"]["id"] == native_id(job_id, dispatch)


def test_a_filled_message_of_another_task_is_the_one_celery_builds_for_it(app):
    template = learned(app)
    shown = ("(1, [2, 3])", "{}")
    want = celery_message(app, "01a3", 2, task="app.tasks.summarize", shown=shown)
    reply_to = want["properties"]["reply_to"]
    filled = template.fill("01a3", 2, task="app.tasks.summarize", shown=shown, reply_to=reply_to)
    same_but_delivery_tag(filled, want)
    assert json.loads(filled)["headers"]["task"] == "app.tasks.summarize"


def test_a_message_sent_from_inside_a_task_names_its_parent(app):
    template = learned(app)
    want = celery_message(app, "01b3", 1, root_id="root-1", parent_id="parent-2")
    parent = Parent(root_id="root-1", parent_id="parent-2")
    reply_to = want["properties"]["reply_to"]
    filled = template.fill("01b3", 1, task=TASK, shown=SHOWN, reply_to=reply_to, parent=parent)
    same_but_delivery_tag(filled, want)


def test_learning_from_a_message_with_a_parent_gives_the_same_template(app):
    message = celery_message(app, "01c4", 1, root_id="root-1", parent_id="parent-2")
    template = learn(as_commands(message), "", "01c4", 1, TASK, SHOWN)
    assert template is not None
    want = celery_message(app, "01d5", 1)
    reply_to = want["properties"]["reply_to"]
    same_but_delivery_tag(template.fill("01d5", 1, task=TASK, shown=SHOWN, reply_to=reply_to), want)


def test_each_fill_gets_a_delivery_tag_of_its_own(app):
    template = learned(app)

    def tag() -> str:
        filled = template.fill("01e6", 1, task=TASK, shown=SHOWN, reply_to="r")
        return str(json.loads(filled)["properties"]["delivery_tag"])

    tags = {tag(), tag()}
    assert len(tags) == 2


def test_the_key_carries_kombus_global_prefix(app):
    assert learned(app, "tenant-celery:").key == f"tenant-celery:{QUEUE}"
    assert learned(app).key == QUEUE


def _edited(app: Celery, edit: Any) -> list[tuple[str, tuple[Any, ...]]]:
    message = celery_message(app, "01f7", 1)
    edit(message)
    return as_commands(message)


@pytest.mark.parametrize(
    "commands",
    [
        pytest.param(lambda app: [], id="no command"),
        pytest.param(
            lambda app: [*as_commands(celery_message(app, "01f7", 1)), ("pexpire", (QUEUE, 10))],
            id="a queue with an expiry",
        ),
        pytest.param(lambda app: [("publish", (QUEUE, "{}"))], id="a fanout publish"),
        pytest.param(lambda app: [("lpush", (QUEUE, "not json"))], id="not JSON"),
        pytest.param(lambda app: [("lpush", (QUEUE, "{}"))], id="no headers"),
        pytest.param(
            lambda app: _edited(app, lambda m: m["properties"].update(body_encoding="utf-8")),
            id="a body not in base64",
        ),
        pytest.param(
            lambda app: _edited(app, lambda m: m["headers"].update(id="another")),
            id="a task id that is not the job's",
        ),
        pytest.param(
            lambda app: _edited(app, lambda m: m["headers"].update(argsrepr="(...)")),
            id="an argsrepr it would not rebuild",
        ),
        pytest.param(
            lambda app: as_commands(celery_message(app, "01f7", 1, kwargs={"a": 1})),
            id="a body with kwargs",
        ),
    ],
)
def test_a_message_it_could_not_rebuild_teaches_nothing(app, commands):
    assert learn(commands(app), "", "01f7", 1, TASK, SHOWN) is None


# -- what a worker holds: kombu's unacked entries (celery_unacked.held_dispatches) ----------


def test_the_unacked_key_names_are_kombus() -> None:
    from kombu.transport import redis as kombu_redis

    assert (
        kombu_redis.Channel.unacked_key,
        kombu_redis.Channel.unacked_index_key,
    ) == (UNACKED, UNACKED_INDEX)


@pytest.mark.parametrize("dispatch", [1, 3])
def test_an_unacked_entry_names_the_job_and_dispatch_it_carries(app, dispatch):
    entry = json.dumps([celery_message(app, "01a2320b7691", dispatch), "", QUEUE])
    nid = task_id(entry)
    assert nid is not None and parse_native_id(nid) == ("01a2320b7691", dispatch)


@pytest.mark.parametrize(
    "entry",
    [
        None,  # acked since the index was read
        "not json",
        "[]",
        json.dumps([{"headers": "x"}, "", QUEUE]),
        json.dumps([{"headers": {"task": "other.task", "id": "not an id!"}}, "", QUEUE]),
        json.dumps([{"headers": {"task": TASK, "id": 5}}, "", QUEUE]),
    ],
)
def test_an_entry_that_is_not_a_dispatch_names_nothing(entry):
    assert task_id(entry) is None
