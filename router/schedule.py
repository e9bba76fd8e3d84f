"""Periodic tasks: the ``schedules:`` section of policies.yaml as values, and the pure
arithmetic of their ticks.

A schedule's ticks are instants in milliseconds since the epoch that every process
computes alike, without talking to another: an interval schedule ticks at the multiples
of its interval since the epoch, a cron schedule where croniter puts its expression in
its time zone. ``decide`` says, from the last tick taken and the time now, which tick a
janitor's pass should take, if any; ``backends/periodic.py`` takes it in Redis.

Across a change of daylight saving time a cron schedule fires as cron does (cronie,
Vixie cron): a time skipped when clocks go forward fires at the change (``30 2 * * *``
at 03:00 that day); a time repeated when clocks go back fires once, at its first
occurrence, unless the hour field is ``*`` or ``*/N``, when it fires every real hour.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from .durations import format_duration

Missed = Literal["run-once", "skip"]
MISSED_POLICIES: tuple[str, ...] = ("run-once", "skip")

# A tick taken this late or later is late: a "skip" schedule drops it. At most half the
# time to the next tick, and at least two janitor polls, so that a pass that comes a poll
# late on a busy machine is still on time.
MAX_GRACE_MS = 60_000
MIN_GRACE_MS = 1_000
# The longest run of ticks that a cron expression may skip over while looking for one
# that is not a repeated wall-clock time (a fixed-hour tick in the hour clocks go back).
_MAX_SKIPPED = 4


@dataclass(frozen=True, slots=True)
class Cron:
    """A 5-field cron expression in an IANA time zone."""

    expression: str
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # cached by zoneinfo

    @property
    def _hour_is_wildcard(self) -> bool:
        return self.expression.split()[1].startswith("*")

    def _repeated(self, tick: dt.datetime) -> bool:
        """Whether ``tick`` is the second occurrence of a wall-clock time (the hour when
        clocks go back) of an expression with a fixed hour: cron runs those once."""
        local = tick.astimezone(self.zone)
        return (
            local.fold == 1
            and local.replace(fold=0).utcoffset() != local.utcoffset()
            and not self._hour_is_wildcard
        )

    def _step(self, after_ms: int, *, forward: bool) -> int:
        from croniter import croniter  # on first use: a policy without cron never needs it

        start = dt.datetime.fromtimestamp(after_ms / 1000, tz=dt.UTC).astimezone(self.zone)
        it = croniter(self.expression, start)
        for _ in range(_MAX_SKIPPED + 1):
            tick = it.get_next(dt.datetime) if forward else it.get_prev(dt.datetime)
            if not self._repeated(tick):
                return int(tick.timestamp() * 1000)
        return int(tick.timestamp() * 1000)

    def next_after(self, ms: int) -> int:
        return self._step(ms, forward=True)

    def latest_at(self, ms: int) -> int:
        # croniter's get_prev is strictly before its start, and ticks fall on whole
        # minutes: a start 1 ms later includes a tick at ``ms`` itself.
        return self._step(ms + 1, forward=False)

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.timezone})"


@dataclass(frozen=True, slots=True)
class Interval:
    """Every ``seconds``, at the multiples of it since the epoch (UTC)."""

    seconds: float

    @property
    def ms(self) -> int:
        return max(round(self.seconds * 1000), 1)

    def next_after(self, ms: int) -> int:
        return (ms // self.ms + 1) * self.ms

    def latest_at(self, ms: int) -> int:
        return (ms // self.ms) * self.ms

    def __str__(self) -> str:
        return f"every {format_duration(self.seconds)}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One entry of ``schedules:``: run ``task`` with these arguments at every tick of
    ``when``, each job due up to ``jitter`` seconds after its tick."""

    name: str
    task: str
    when: Cron | Interval
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    jitter: float = 0.0
    missed: Missed = "run-once"
    line: int | None = None  # where the schedule starts in its file, for messages
    task_line: int | None = None

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms``."""
        return self.when.next_after(ms)

    def latest_at(self, ms: int) -> int:
        """The last tick at or before ``ms``."""
        return self.when.latest_at(ms)

    def grace_ms(self, tick: int) -> int:
        """How late a pass may take ``tick`` and still be on time."""
        half_gap = (self.next_after(tick) - tick) // 2
        return max(MIN_GRACE_MS, min(MAX_GRACE_MS, half_gap))


@dataclass(frozen=True, slots=True)
class Decision:
    """What one pass does: take ``tick`` (``run``: with a job; otherwise only recorded
    as passed), ``catch_up`` when the job stands for ticks that no janitor took."""

    tick: int
    run: bool
    catch_up: bool = False


def decide(schedule: Schedule, last: int | None, now: int) -> Decision | None:
    """The tick a pass at ``now`` takes, given the last tick taken (None: never), or None
    when no tick is due.

    Only the most recent tick at or before ``now`` is ever taken, so a pass never makes
    more than one job: ticks between ``last`` and it were missed (every janitor was
    down, or busy for longer than the interval). A "run-once" schedule then runs that
    one tick as the catch-up job; a "skip" schedule runs it only if it is on time (see
    ``Schedule.grace_ms``). A schedule seen for the first time starts from now: its
    latest tick runs only if it is on time.
    """
    latest = schedule.latest_at(now)
    if last is not None and latest <= last:
        return None
    on_time = now - latest <= schedule.grace_ms(latest)
    if last is None:
        return Decision(latest, run=on_time)
    missed = schedule.next_after(last) < latest
    if on_time and not missed:
        return Decision(latest, run=True)
    if schedule.missed == "run-once":
        return Decision(latest, run=True, catch_up=True)
    return Decision(latest, run=on_time)
