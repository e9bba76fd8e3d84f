"""Reading the ``schedules:`` section of policies.yaml (``router.schedule``'s values).

```yaml
schedules:
  nightly-report:
    task: app.tasks.report          # a registered task: checked when an app is loaded
    cron: "30 2 * * *"              # 5 fields: minute hour day-of-month month day-of-week
    timezone: Europe/Berlin         # IANA name; default UTC (only with cron)
    args: [daily]
    kwargs: {format: pdf}
    jitter: 30s                     # each job due up to this long after its tick
    missed: run-once                # run-once (default) | skip
  heartbeat:
    task: app.tasks.ping
    every: 1m                       # an interval instead of cron
```

Problems are reported like the rest of the file, ``file:line: key: message``. Whether
the task exists is known only once the app is imported: ``check_tasks`` does that for
the worker, the API and the janitor.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from yaml.nodes import Node, ScalarNode, SequenceNode

from .codec import encode_call
from .durations import format_duration
from .errors import PayloadError, PolicyError, PolicyProblem
from .policy_yaml import NAME_RE, NAME_RULE, Entry, NodeReader, hint, line_of, shown
from .schedule import MISSED_POLICIES, Cron, Interval, Missed, Schedule

SCHEDULE_KEYS = ("task", "cron", "timezone", "every", "args", "kwargs", "jitter", "missed")
MIN_INTERVAL = 1.0  # seconds: the janitors' passes come every half second
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}")


def read_schedules(reader: NodeReader, entry: Entry | None) -> dict[str, Schedule]:
    """The schedules of ``schedules:`` (none when absent); problems go to ``reader``."""
    if entry is None:
        return {}
    body = reader.mapping(entry.value, "schedules", None, "one entry per schedule")
    if body is None:
        return {}
    found = {}
    for name, item in body.items():
        schedule = _schedule(reader, name, item)
        if schedule is not None:
            found[name] = schedule
    return found


def _schedule(reader: NodeReader, name: str, entry: Entry) -> Schedule | None:
    at = f"schedules.{name}"
    before = len(reader.problems)
    if not NAME_RE.fullmatch(name):
        reader.report(entry.line, at, f"invalid schedule name: use {NAME_RULE}")
    body = reader.mapping(entry.value, at, SCHEDULE_KEYS, "task and cron or every")
    if body is None:
        return None
    task = _task(reader, body, at, entry.line)
    when = _when(reader, body, at, entry.line)
    args = reader.optional(body, at, "args", lambda n, d: _args(reader, n, d), ())
    no_kwargs: dict[str, Any] = {}
    kwargs = reader.optional(body, at, "kwargs", lambda n, d: _kwargs(reader, n, d), no_kwargs)
    jitter = reader.optional(body, at, "jitter", reader.duration, 0.0)
    missed = reader.optional(body, at, "missed", reader.choice_of(MISSED_POLICIES), "run-once")
    if args is not None and kwargs is not None:
        try:
            encode_call(args, kwargs)
        except PayloadError as exc:
            key = "kwargs" if str(exc).startswith("argument '") else "args"
            reader.report(body[key].line, f"{at}.{key}", f"{exc}: write plain YAML values")
    if len(reader.problems) > before or None in (task, when, args, kwargs, jitter, missed):
        return None
    schedule = Schedule(
        name=name,
        task=cast(str, task),
        when=cast(Cron | Interval, when),
        args=cast(tuple[Any, ...], args),
        kwargs=cast(dict[str, Any], kwargs),
        jitter=cast(float, jitter),
        missed=cast(Missed, missed),
        line=entry.line,
        task_line=body["task"].line,
    )
    return schedule if _jitter_fits(reader, schedule, body) else None


def _task(reader: NodeReader, body: dict[str, Entry], at: str, line: int) -> str | None:
    if "task" not in body:
        reader.report(line, f"{at}.task", "is required: name the registered task to run")
        return None
    node = body["task"].value
    text = str(node.value) if isinstance(node, ScalarNode) else ""
    if _TASK_NAME.fullmatch(text):
        return text
    reader.report(
        line_of(node),
        f"{at}.task",
        f"{shown(node)!r} is not a task name: write the name @task registers, "
        "e.g. app.tasks.report",
    )
    return None


def _when(reader: NodeReader, body: dict[str, Entry], at: str, line: int) -> Cron | Interval | None:
    if ("cron" in body) == ("every" in body):
        both = "cron" in body
        reader.report(
            body["every"].line if both else line,
            at,
            ("has both cron and every: keep one" if both else "needs cron: or every:")
            + ' (cron: "0 3 * * *" with timezone:, or every: 10m)',
        )
        return None
    if "every" in body:
        if "timezone" in body:
            reader.report(
                body["timezone"].line,
                f"{at}.timezone",
                "applies to cron only: an interval counts real time; remove it",
            )
            return None
        seconds = reader.positive_duration(body["every"].value, f"{at}.every")
        if seconds is None:
            return None
        if seconds < MIN_INTERVAL:
            reader.report(
                body["every"].line,
                f"{at}.every",
                f"{format_duration(seconds)} is shorter than a schedule can tick (janitors "
                f"pass every half second): set at least {format_duration(MIN_INTERVAL)}",
            )
            return None
        return Interval(seconds)
    expression = _cron(reader, body["cron"].value, f"{at}.cron")
    zone = reader.optional(body, at, "timezone", lambda n, d: _zone(reader, n, d), "UTC")
    if expression is None or zone is None:
        return None
    cron = Cron(expression, zone)
    try:
        cron.next_after(0)
    except ValueError:  # croniter's CroniterBadDateError: "30 2 30 2 *" (February 30)
        reader.report(
            body["cron"].line,
            f"{at}.cron",
            f"{expression!r} never fires (no such date): fix the day or the month",
        )
        return None
    return cron


def _cron(reader: NodeReader, node: Node, dotted: str) -> str | None:
    from croniter import croniter

    text = " ".join(str(node.value).split()) if isinstance(node, ScalarNode) else ""
    fields = len(text.split())
    if fields != 5:
        reader.report(
            line_of(node),
            dotted,
            f"{shown(node)!r} has {fields} fields; a cron expression has 5: minute hour "
            'day-of-month month day-of-week, e.g. "30 2 * * *" (quote it in YAML)',
        )
        return None
    if not croniter.is_valid(text):
        reader.report(
            line_of(node),
            dotted,
            f"{text!r} is not a valid cron expression: each field is *, a number in its "
            "range, a list (1,15), a range (1-5) or a step (*/10)",
        )
        return None
    return text


def _zone(reader: NodeReader, node: Node, dotted: str) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    text = str(node.value) if isinstance(node, ScalarNode) else ""
    try:
        if text and not text.startswith(("/", ".")) and ".." not in text:
            ZoneInfo(text)
            return text
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    reader.report(
        line_of(node),
        dotted,
        f"unknown time zone {shown(node)!r}: {hint(text, sorted(available_timezones()))}"
        "write an IANA name such as Europe/Berlin or UTC",
    )
    return None


def _args(reader: NodeReader, node: Node, dotted: str) -> tuple[Any, ...] | None:
    if not isinstance(node, SequenceNode):
        reader.report(line_of(node), dotted, f"must be a list, e.g. [1, two]; got {shown(node)}")
        return None
    value = _plain(reader, node, dotted)
    return tuple(value) if isinstance(value, list) else None


def _kwargs(reader: NodeReader, node: Node, dotted: str) -> dict[str, Any] | None:
    body = reader.mapping(node, dotted, None, "argument names and values")
    if body is None:
        return None
    found = {}
    for key, item in body.items():
        if not key.isidentifier():
            reader.report(item.line, f"{dotted}.{key}", "is not a Python argument name")
            return None
        value = _plain(reader, item.value, f"{dotted}.{key}")
        if value is _BAD:
            return None
        found[key] = value
    return found


_BAD = object()


def _plain(reader: NodeReader, node: Node, dotted: str) -> Any:
    try:
        return reader.scalar(node)
    except ValueError as exc:
        reader.report(line_of(node), dotted, str(exc))
        return _BAD


def _jitter_fits(reader: NodeReader, schedule: Schedule, body: dict[str, Entry]) -> bool:
    if "jitter" not in body:
        return True
    # The shortest gap between the first few ticks: a cron expression's gaps vary.
    ticks = list(_ticks(schedule, schedule.next_after(0), 5))
    gap = min(b - a for a, b in itertools.pairwise(ticks))
    if schedule.jitter * 1000 < gap:
        return True
    reader.report(
        body["jitter"].line,
        f"schedules.{schedule.name}.jitter",
        f"{format_duration(schedule.jitter)} is not shorter than the time between ticks "
        f"({format_duration(gap / 1000)}), so jobs of two ticks could swap: set less",
    )
    return False


def _ticks(schedule: Schedule, first: int, count: int) -> Iterable[int]:
    tick = first
    for _ in range(count):
        yield tick
        tick = schedule.next_after(tick)


def check_tasks(schedules: Mapping[str, Schedule], path: str, tasks: Iterable[str]) -> None:
    """Raise PolicyError, one ``file:line: key: message`` per schedule, when a schedule
    names a task that the loaded app does not register (``tasks``: the names)."""
    tasks = sorted(tasks)
    problems = [
        PolicyProblem(
            path,
            s.task_line or s.line,
            f"schedules.{s.name}.task",
            f"no registered task {s.task!r}: {hint(s.task, tasks)}register it with "
            "@task in the app (--app), or fix the name",
        )
        for s in schedules.values()
        if s.task not in tasks
    ]
    if problems:
        raise PolicyError(problems)
