"""Engine settings derived from a policy: taskrouter never runs on an engine's defaults.

Every number a worker or an adapter needs comes from here, so ``taskrouter policy
explain`` shows exactly what runs. Per profile:

- ``backend``, ``lane``, ``rule``, ``reason``: from ``router.classify``.
- ``queue``: the profile's ``queue``, else its name.
- ``soft_time_limit`` = ``timeout``. Celery raises SoftTimeLimitExceeded inside the task,
  so the task can clean up; the job fails with a timeout error.
- ``time_limit`` = ``timeout`` + grace, grace = 10% of ``timeout``, at least 5 s and at most
  60 s. The hard kill, for a task that ignores the soft limit; the grace leaves time
  to clean up without letting a stuck task hold a worker for long.
- ``job_timeout`` = ``timeout`` rounded up to whole seconds: RQ raises its timeout
  exception inside the work-horse at that moment, as Celery's soft limit does, so a job
  times out at the same moment on both engines (RQ kills a horse that ignores it later).
- ``keep_results`` in whole seconds: RQ's ``result_ttl`` and ``failure_ttl``, Celery's
  ``result_expires`` and the TTL of taskrouter's own job records, so a job's status
  disappears everywhere at once. Engine defaults differ (RQ 500 s, Celery 1 day).
- ``max_attempts`` = ``retries.max`` + 1: the first run plus every retry.
- ``long_running`` = ``expected_latency`` >= 1 s. A Celery worker consuming such a queue
  gets prefetch multiplier 1: with Celery's default 4, short tasks would sit reserved
  behind a long one on a busy process while other processes are idle. Queues of only
  sub-second tasks keep 4, which saves a broker round trip per task. A queue of a
  profile routed by its observed run times (``routing.adaptive``) gets 1 too: whatever
  it declares, its tasks may run for seconds while it stays on the prefork lane.
- ``concurrency`` and ``rate_limit``: copied; they are global caps enforced by
  taskrouter across every worker of both engines, not per-worker engine settings.

The I/O lane (``lane: io``, a Celery worker with a threads pool and an event loop)
acknowledges each message when the job starts and keeps the job safe through its lease,
so its profiles hold no unacknowledged message while they run: the visibility window
below is derived from the prefork lane's profiles only. A lane worker's per-process
concurrency is the sum, over the profiles it serves, of each profile's global
``concurrency`` cap, or ``IO_CONCURRENCY`` for a profile without one (at most
``IO_MAX_CONCURRENCY``); ``--concurrency`` overrides it.

Once per policy, the Celery visibility timeout. Celery's Redis broker (kombu) re-delivers
any message that is not acknowledged within this window, so a task that is still
running, or still waiting in a worker, when it expires runs twice. Celery's default
of one hour is too short for some policies and needlessly long for others, so:

- need = ``time_limit`` x 2 (one message running and one prefetched behind it, at
  prefetch multiplier 1) + the longest retry backoff of the workflow-shaped
  (not isolated) Celery profiles, because those retry with a broker countdown inside
  native Celery canvases and the worker holds the message unacknowledged until its
  ETA + ``KOMBU_SWEEP_LAG`` (100 s: kombu 5.7 looks for expired messages only every
  ``unacked_restore_interval`` 10 s x ``unacked_restore_throttle`` 10, so re-delivery
  times are blurred by up to that much) + a margin of 10% of that sum, at least 60 s.
- The window is the largest need over the Celery-routed profiles (time limit and
  backoff each taken at their maximum), at least 300 s, rounded up to whole seconds.
- When ``routing.celery_visibility_timeout`` is set (a broker shared with other apps),
  the window is that value, and a Celery-routed profile whose own need exceeds it is
  an error of the policy file, raised when it is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from taskrouter.classify import Rule, adaptive, classify
from taskrouter.durations import format_duration
from taskrouter.errors import PolicyError, PolicyProblem
from taskrouter.observed import candidate_lanes, lane_queue
from taskrouter.policy import (
    LANE_ENGINE,
    Budget,
    Engine,
    Lane,
    PerKey,
    Policy,
    Profile,
    RateLimit,
    Retries,
    RetryAfterPolicy,
)

GRACE_FRACTION = 0.1
GRACE_MIN = 5.0
GRACE_MAX = 60.0
LONG_RUNNING_AFTER = 1.0  # seconds of expected_latency; see long_running above
PREFETCH_LONG = 1
PREFETCH_SHORT = 4  # Celery's own default, kept where it is harmless and saves round trips

KOMBU_SWEEP_LAG = 100.0  # unacked_restore_interval 10 s x unacked_restore_throttle 10
MESSAGES_PER_PROCESS = 2  # the running one and one prefetched behind it
VISIBILITY_MARGIN_FRACTION = 0.1
VISIBILITY_MARGIN_MIN = 60.0
VISIBILITY_FLOOR = 300
IO_CONCURRENCY = 1000  # calls in flight per lane process for a profile with no global cap
IO_MAX_CONCURRENCY = 10_000
_ALL_LANES: tuple[Lane, ...] = ("prefork", "fork", "io")


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """Every engine setting of one profile, as derived from the policy."""

    profile: str
    backend: Engine
    lane: Lane
    rule: Rule
    reason: str
    queue: str
    soft_time_limit: float
    time_limit: float
    job_timeout: int
    keep_results: int
    max_attempts: int
    retries: Retries
    long_running: bool
    concurrency: int | None
    rate_limit: RateLimit | None
    retry_after: RetryAfterPolicy = field(default_factory=RetryAfterPolicy)
    per_key: PerKey = field(default_factory=PerKey)
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class Derived:
    """A policy with the settings of each profile and the Celery visibility window."""

    policy: Policy
    profiles: dict[str, ProfileSettings]
    visibility_timeout: int
    visibility_reason: str


def grace(timeout: float) -> float:
    """Seconds between the soft and the hard time limit for ``timeout``."""
    return min(GRACE_MAX, max(GRACE_MIN, GRACE_FRACTION * timeout))


def time_limit(timeout: float) -> float:
    """The hard time limit (the kill) for a profile whose ``timeout`` is the soft one."""
    return timeout + grace(timeout)


def workflow_backoff(profile: Profile) -> float:
    """The longest retry wait that a Celery worker holds unacknowledged for ``profile``.

    Only workflow-shaped profiles count: they retry with a broker countdown inside
    Celery canvases. Isolated jobs are retried by taskrouter, not by a held message.
    """
    return profile.retries.longest_delay if profile.shape != "isolated" else 0.0


def visibility_need(longest_time_limit: float, longest_backoff: float) -> float:
    """The visibility window, in seconds, that a task with these worst cases needs."""
    held = longest_time_limit * MESSAGES_PER_PROCESS + longest_backoff + KOMBU_SWEEP_LAG
    return held + max(VISIBILITY_MARGIN_MIN, VISIBILITY_MARGIN_FRACTION * held)


def profile_visibility_need(profile: Profile) -> float:
    """The visibility window ``profile`` needs on its own, when it runs on Celery."""
    return visibility_need(time_limit(profile.timeout), workflow_backoff(profile))


def derive(policy: Policy) -> Derived:
    """Derive every engine setting of ``policy``.

    Raises PolicyError when ``routing.celery_visibility_timeout`` is too short for a
    Celery-routed profile (load_policy already refuses such a file).
    """
    problems = lane_problems(policy) + visibility_problems(policy)
    if problems:
        raise PolicyError(problems)
    settings = {name: _settings(policy, profile) for name, profile in policy.profiles.items()}
    window, reason = _visibility_window(policy, settings)
    return Derived(policy, settings, window, reason)


def _settings(policy: Policy, profile: Profile) -> ProfileSettings:
    decision = classify(profile, policy.routing)
    hard_limit = time_limit(profile.timeout)
    return ProfileSettings(
        profile=profile.name,
        backend=decision.backend,
        lane=decision.lane,
        rule=decision.rule,
        reason=decision.reason,
        queue=profile.queue or profile.name,
        soft_time_limit=profile.timeout,
        time_limit=hard_limit,
        job_timeout=math.ceil(profile.timeout),
        keep_results=math.ceil(profile.keep_results),
        max_attempts=profile.retries.max + 1,
        retries=profile.retries,
        long_running=profile.expected_latency >= LONG_RUNNING_AFTER,
        concurrency=profile.concurrency,
        rate_limit=profile.rate_limit,
        retry_after=profile.retry_after,
        per_key=profile.per_key,
        budget=profile.budget,
    )


def celery_profiles(policy: Policy) -> list[Profile]:
    """The profiles of ``policy`` that hold a Celery message while they run (Celery's
    prefork lane, or may with adaptive routing; the I/O lane acknowledges at start), in
    file order."""
    return [p for p in policy.profiles.values() if "prefork" in candidate_lanes(p, policy.routing)]


def lane_problems(
    policy: Policy, lines: Mapping[str, int | None] | None = None
) -> list[PolicyProblem]:
    """One problem per profile whose queue another profile uses in another lane of the
    same engine (Celery's prefork and I/O lanes): the queue's worker could serve only one
    of them. An RQ queue and a Celery queue of one name are different queues."""
    first: dict[tuple[str, str], tuple[str, Lane]] = {}
    problems = []
    pairs = [
        (profile, lane_queue(profile, policy.routing, lane), lane)
        for profile in policy.profiles.values()
        for lane in candidate_lanes(profile, policy.routing)
    ]
    for profile, queue, lane in pairs:
        other = first.setdefault((queue, LANE_ENGINE[lane]), (profile.name, lane))
        if other[1] != lane:
            line = lines.get(profile.name) if lines is not None else profile.line
            problems.append(
                PolicyProblem(
                    policy.path,
                    line,
                    f"profiles.{profile.name}.queue",
                    f"queue {queue!r} is used in the {other[1]} lane by profile {other[0]!r} "
                    f"and in the {lane} lane by this one; a worker serves one lane: give "
                    "this profile a queue of its own",
                )
            )
    return problems


def visibility_problems(
    policy: Policy, lines: Mapping[str, int | None] | None = None
) -> list[PolicyProblem]:
    """One problem per Celery-routed profile that needs more than the configured window.

    Empty when ``routing.celery_visibility_timeout`` is not set: the derived window then
    fits every profile by construction. ``lines`` maps a profile name to the line to
    report (its ``timeout``); by default the line where the profile starts.
    """
    window = policy.routing.celery_visibility_timeout
    if window is None:
        return []
    problems = []
    for profile in celery_profiles(policy):
        need = profile_visibility_need(profile)
        if need > window:
            line = lines.get(profile.name) if lines is not None else profile.line
            problems.append(
                PolicyProblem(
                    policy.path,
                    line,
                    f"profiles.{profile.name}.timeout",
                    _too_long_message(profile, need, window),
                )
            )
    return problems


def _too_long_message(profile: Profile, need: float, window: float) -> str:
    formula = _need_formula(time_limit(profile.timeout), workflow_backoff(profile))
    return (
        f"timeout {format_duration(profile.timeout)} needs a Celery visibility window of "
        f"{math.ceil(need)}s ({formula}), but routing.celery_visibility_timeout is "
        f"{format_duration(window)}, after which the broker re-delivers the task and it runs "
        f"twice: lower the timeout, raise routing.celery_visibility_timeout to at least "
        f"{math.ceil(need)}s, or set backend: rq"
    )


def _seconds(value: float) -> str:
    """Seconds for arithmetic in messages: 660s, 142.5s (never 11m: the sums must add up)."""
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def _need_formula(
    longest_time_limit: float, longest_backoff: float, limit_of: str = "", backoff_of: str = ""
) -> str:
    """The terms of visibility_need as text; ``*_of`` name the profiles they come from."""
    held = longest_time_limit * MESSAGES_PER_PROCESS + longest_backoff + KOMBU_SWEEP_LAG
    margin = visibility_need(longest_time_limit, longest_backoff) - held
    limit_of = f" ({limit_of})" if limit_of else ""
    backoff_of = f" ({backoff_of})" if backoff_of else ""
    terms = [
        f"time limit {_seconds(longest_time_limit)}{limit_of} x {MESSAGES_PER_PROCESS} "
        "(one running, one prefetched)"
    ]
    if longest_backoff:
        terms.append(f"workflow retry backoff {_seconds(longest_backoff)}{backoff_of}")
    terms.append(f"kombu sweep lag {_seconds(KOMBU_SWEEP_LAG)}")
    terms.append(f"margin {_seconds(margin)}")
    return " + ".join(terms)


def _visibility_window(policy: Policy, settings: Mapping[str, ProfileSettings]) -> tuple[int, str]:
    configured = policy.routing.celery_visibility_timeout
    if configured is not None:
        return math.ceil(configured), (
            f"set by routing.celery_visibility_timeout {format_duration(configured)}; "
            "every Celery-routed profile fits in it"
        )
    on_celery = celery_profiles(policy)
    if not on_celery:
        return VISIBILITY_FLOOR, f"no profile routes to Celery, so the {VISIBILITY_FLOOR}s floor"
    longest = max(on_celery, key=lambda p: settings[p.name].time_limit)
    slowest_retry = max(on_celery, key=workflow_backoff)
    limit, backoff = settings[longest.name].time_limit, workflow_backoff(slowest_retry)
    need = visibility_need(limit, backoff)
    window = max(VISIBILITY_FLOOR, math.ceil(need))
    formula = _need_formula(limit, backoff, longest.name, slowest_retry.name)
    reason = f"{formula} = {_seconds(need)}"
    if math.ceil(need) < VISIBILITY_FLOOR:
        reason += f", raised to the {VISIBILITY_FLOOR}s floor"
    elif window != need:
        reason += f", rounded up to {window}s"
    return window, reason


def prefetch_multiplier(derived: Derived, queues: Iterable[str]) -> int:
    """The Celery prefetch multiplier for a prefork worker consuming ``queues``.

    1 when any prefork profile on those queues is long_running, or is routed by its
    observed run times (which may be seconds while it stays short), else 4.
    """
    wanted = set(queues)
    long_running = any(
        s.long_running
        for s in derived.profiles.values()
        if s.lane == "prefork" and s.queue in wanted
    )
    routing = derived.policy.routing
    observed = any(
        lane_queue(p, routing, "prefork") in wanted
        for p in derived.policy.profiles.values()
        if "prefork" in candidate_lanes(p, routing) and adaptive(p, routing)
    )
    return PREFETCH_LONG if long_running or observed else PREFETCH_SHORT


def io_concurrency(derived: Derived, queues: Iterable[str]) -> int:
    """Calls in flight per I/O lane process consuming ``queues`` (see the docstring)."""
    wanted = set(queues)
    served = [s for s in derived.profiles.values() if s.lane == "io" and s.queue in wanted]
    total = sum(s.concurrency or IO_CONCURRENCY for s in served) or IO_CONCURRENCY
    return min(total, IO_MAX_CONCURRENCY)


def lane_queues(derived: Derived, lane: Lane) -> list[str]:
    """The queue names a lane's workers consume, sorted, each once: with adaptive
    routing, the queues of every profile that may move to the lane too."""
    routing = derived.policy.routing
    queues = {s.queue for s in derived.profiles.values() if s.lane == lane}
    for profile in derived.policy.profiles.values():
        if lane in candidate_lanes(profile, routing):
            queues.add(lane_queue(profile, routing, lane))
    return sorted(queues)


def celery_queues(derived: Derived) -> list[str]:
    """The queue names Celery's prefork workers consume (not the I/O lane's)."""
    return lane_queues(derived, "prefork")


def rq_queues(derived: Derived) -> list[str]:
    """The queue names RQ workers consume, sorted, each once."""
    return lane_queues(derived, "fork")


def engine_queues(derived: Derived, engine: Engine) -> list[str]:
    """Every queue of an engine, whatever the lane (queue depths, tools)."""
    lanes: list[Lane] = [lane for lane in _ALL_LANES if LANE_ENGINE[lane] == engine]
    return sorted({q for lane in lanes for q in lane_queues(derived, lane)})
