"""``@task``: registering functions by name, and the per-call options of ``using()``.

A worker executes only functions registered here by name; a name in a message is looked
up in this registry and never imported.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import codec
from .errors import TaskNotRegistered
from .flow import CurrentJob, running

if TYPE_CHECKING:
    from .job import Job
    from .workflow import Signature

P = ParamSpec("P")
R = TypeVar("R")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
_REGISTRY: dict[str, Task[Any, Any]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOptions:
    """Per-call options, set with ``task.using(...)``; never mixed with task kwargs."""

    idempotency_key: str | None = None
    delay: float | None = None  # seconds before the job may start ("scheduled" until then)
    limit_key: str | None = None  # the key of the profile's per_key limits (a tenant, a model)
    cost: int | None = None  # units of the profile's rate_limit this call uses (LLM tokens)

    def __post_init__(self) -> None:
        for name in ("idempotency_key", "limit_key"):
            key = getattr(self, name)
            if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200):
                raise ValueError(f"{name} must be a string of 1 to 200 characters")
        if self.cost is not None and (
            isinstance(self.cost, bool)
            or not isinstance(self.cost, int)
            or not 0 < self.cost <= 10**12
        ):
            raise ValueError("cost must be a whole number of rate-limit units, 1 or more")
        if self.delay is not None and (
            isinstance(self.delay, bool)
            or not isinstance(self.delay, int | float)
            or self.delay < 0
        ):
            raise ValueError("delay must be a number of seconds >= 0")


class Task(Generic[P, R]):
    """A function registered with ``@task``. Calling it runs it inline."""

    def __init__(self, fn: Callable[P, R], *, name: str, profile: str) -> None:
        self.fn = fn
        self.name = name
        self.profile = profile
        functools.update_wrapper(self, fn)

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # A plain call runs inline with a detached current_job() of its own.
        with running(CurrentJob(None, 0)):
            return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} profile={self.profile}>"

    def using(self, **options: Any) -> BoundTask[P, R]:
        """Per-call options for one enqueue: ``idempotency_key=``, ``delay=`` seconds,
        ``limit_key=`` (the key of the profile's per-key limits), ``cost=`` (units of
        its rate limit)."""
        return BoundTask(self, CallOptions(**options))

    def enqueue(self, /, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Route the call by the task's profile and return its Job at once."""
        return BoundTask(self, CallOptions()).enqueue(*args, **kwargs)

    def s(self, /, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task for chains, groups and chords."""
        from .workflow import Signature

        return Signature(self.name, args, kwargs)


@dataclass(frozen=True, slots=True)
class BoundTask(Generic[P, R]):
    task: Task[P, R]
    options: CallOptions = field(default_factory=CallOptions)

    def enqueue(self, /, *args: P.args, **kwargs: P.kwargs) -> Job:
        # Positional-only self: a task may take a keyword argument named "self".
        from ._runtime import current

        return current().enqueue(self.task, args, kwargs, self.options)


def task(
    fn: Callable[P, R] | None = None, /, *, profile: str, name: str | None = None, **unknown: Any
) -> Any:
    """Register a function as a task routed by ``profile``.

    ``name`` defaults to ``module.qualname``. Unknown options are refused here, at
    decoration time, rather than ignored.
    """
    if unknown:
        raise TypeError(
            f"@task got unknown option(s) {', '.join(sorted(unknown))}: it takes profile= and "
            "name=; per-call options go through task.using(...), engine settings through "
            "policies.yaml"
        )
    if not isinstance(profile, str) or not profile:
        raise TypeError("@task needs profile='<a profile of policies.yaml>'")

    def register(func: Callable[P, R]) -> Task[P, R]:
        task_name = f"{func.__module__}.{func.__qualname__}" if name is None else name
        if not _NAME_RE.fullmatch(task_name) or "<" in task_name:
            raise ValueError(
                f"task name {task_name!r} is not usable: give name='...' (letters, digits, "
                "'_', '.', ':' or '-', starting with a letter)"
            )
        existing = _REGISTRY.get(task_name)
        if (
            existing is not None
            and existing.fn is not func
            and _origin(existing.fn) != _origin(func)
        ):
            raise ValueError(f"task name {task_name!r} is already registered by {existing.fn!r}")
        registered = Task(func, name=task_name, profile=profile)
        _REGISTRY[task_name] = registered
        return registered

    return register(fn) if fn is not None else register


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    # A module imported twice (as __main__ and by name) registers the same function twice.
    code = getattr(fn, "__code__", None)
    return (getattr(code, "co_filename", ""), getattr(fn, "__qualname__", ""))


def lookup(name: str) -> Task[Any, Any]:
    """The registered task called ``name``; TaskNotRegistered otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise TaskNotRegistered(name) from None


def registered() -> dict[str, Task[Any, Any]]:
    """A copy of the registry: name -> Task."""
    return dict(_REGISTRY)


def limit_key_of(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], argument: str | None
) -> str | None:
    """The limit key of a call: the value of the task's argument named ``argument`` (the
    profile's ``per_key.key``) as text, or None when the profile names none, the
    argument is None, or the call does not bind (the worker reports that error)."""
    if argument is None:
        return None
    try:
        bound = _signature(task.fn).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    value = bound.arguments.get(argument)
    if value is None:
        return None
    text = value if isinstance(value, str) else codec.dumps(value, f"argument {argument!r}")
    return text[:200] or None


@functools.cache
def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(fn)
