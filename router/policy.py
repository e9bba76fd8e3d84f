"""The policy model: what policies.yaml says, as frozen values in seconds.

Loading and validation live in ``router.policy_file``; routing decisions in
``router.classify``; engine settings derived from a policy in ``router.derive``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .schedule import Schedule

Shape = Literal["isolated", "chain", "group", "chord"]
BackendChoice = Literal["auto", "celery", "rq"]
Engine = Literal["celery", "rq"]
Kind = Literal["cpu", "io"]
# Where a profile's jobs run: Celery's prefork pool, RQ's fork per job, or the I/O lane
# (a Celery worker that holds thousands of waiting calls in one process).
Lane = Literal["prefork", "fork", "io"]
WorkflowMode = Literal["celery", "per-step"]
# What a RetryAfter from one job holds back: that job only, every job of its limit key,
# or every job of its profile.
PauseScope = Literal["none", "key", "profile"]
PAUSE_SCOPES: tuple[str, ...] = ("none", "key", "profile")

SHAPES: tuple[str, ...] = ("isolated", "chain", "group", "chord")
BACKEND_CHOICES: tuple[str, ...] = ("auto", "celery", "rq")
ENGINES: tuple[str, ...] = ("celery", "rq")
KINDS: tuple[str, ...] = ("cpu", "io")
LANES: tuple[str, ...] = ("prefork", "fork", "io")
# The engine each lane runs on.
LANE_ENGINE: dict[str, Engine] = {"prefork": "celery", "fork": "rq", "io": "celery"}
WORKFLOW_MODES: tuple[str, ...] = ("celery", "per-step")


@dataclass(frozen=True, slots=True)
class Retries:
    """How often a failed job is tried again, and how long to wait before each try."""

    max: int = 0
    backoff: tuple[float, ...] = ()

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1-based) failed.

        The list is used in order; its last value repeats. No list means no wait.
        """
        if not self.backoff:
            return 0.0
        return self.backoff[min(failed_attempt, len(self.backoff)) - 1]

    @property
    def longest_delay(self) -> float:
        return max(self.backoff, default=0.0)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` job starts per ``per`` seconds, across every worker."""

    count: int
    per: float

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "d"}.get(self.per)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.per:g}s"


@dataclass(frozen=True, slots=True)
class RetryAfterPolicy:
    """What a ``RetryAfter`` raised by a task (a provider's "not now") does."""

    pause: PauseScope = "none"  # who else waits until then
    http_429: bool = False  # an httpx/requests HTTP 429 error is a RetryAfter
    default: float = 10.0  # seconds, for a 429 without a usable Retry-After header
    max: int = 100  # waits of one job before it fails instead (a provider that never lets up)


@dataclass(frozen=True, slots=True)
class PerKey:
    """Limits per limit key (a tenant, a model), under the profile's global ones."""

    key: str | None = None  # the task argument whose value is the key
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    # (key, starts in a row) for the keys whose turn of the fair-share round is longer
    # than one start (a paid tier); every other key has 1.
    weights: tuple[tuple[str, int], ...] = ()


BUDGET_ACTIONS: tuple[str, ...] = ("pause", "refuse")


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend ceiling per window: what tasks report with ``current_job().charge``."""

    limit: float  # per window, in the unit the tasks charge in (dollars, credits)
    per: float  # the window, seconds; windows are fixed (whole multiples from the epoch)
    per_key: float | None = None  # the same ceiling for each limit key
    when_reached: Literal["pause", "refuse"] = "pause"  # hold new starts, or also refuse enqueues
    price: float | None = None  # charged at each start per unit of the call's cost


@dataclass(frozen=True, slots=True)
class Profile:
    """One profile of policies.yaml, with every default filled in."""

    name: str
    expected_latency: float
    shape: Shape = "isolated"
    backend: BackendChoice = "auto"
    kind: Kind = "cpu"
    queue: str = ""
    timeout: float = 300.0
    retries: Retries = field(default_factory=Retries)
    keep_results: float = 86400.0
    concurrency: int | None = None
    rate_limit: RateLimit | None = None
    retry_after: RetryAfterPolicy = field(default_factory=RetryAfterPolicy)
    per_key: PerKey = field(default_factory=PerKey)
    budget: Budget | None = None
    line: int | None = None  # where the profile starts in its file, for messages


@dataclass(frozen=True, slots=True)
class Adaptive:
    """``routing.adaptive``: route ``backend: auto`` profiles by their observed p90 run time.

    ``min_samples`` runs before observation decides; the p90 must fall below
    ``long_after`` x (1 - ``band``) before a long profile turns short again; a profile
    stays at least ``dwell`` seconds where a switch put it.
    """

    min_samples: int = 50
    band: float = 0.25
    dwell: float = 600.0


@dataclass(frozen=True, slots=True)
class Routing:
    long_after: float = 30.0
    workflows: WorkflowMode = "celery"
    # When set, the Celery broker's visibility window is this value instead of the
    # derived one (brokers shared with other apps, where the shortest window wins);
    # a Celery-routed profile that does not fit in it is refused.
    celery_visibility_timeout: float | None = None
    # routing.adaptive: None (off, the default) or the settings of observed routing.
    adaptive: Adaptive | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    path: str
    routing: Routing
    profiles: Mapping[str, Profile]
    version: int = 1
    # Periodic tasks (``schedules:``), run by the janitors: router/schedule.py.
    schedules: Mapping[str, Schedule] = field(default_factory=dict)

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles)) or "none"
            raise KeyError(
                f"profile {name!r} is not in {self.path} (known profiles: {known})"
            ) from None
