"""router.registry: @task, names, per-call options and lookup."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from taskrouter import _runtime, registry
from taskrouter.errors import TaskNotRegistered, TaskrouterError
from taskrouter.registry import BoundTask, CallOptions, Task, lookup, task


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Whatever a test registers is gone afterwards; what was there stays."""
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def unique(stem: str = "t") -> str:
    return f"tests.{stem}_{uuid.uuid4().hex[:8]}"


def module_level(x: int, *, y: int = 1) -> int:
    """Adds."""
    return x + y


class Holder:
    @staticmethod
    def method(x: int) -> int:
        return x * 2


class NoRuntime:
    """A runtime that fails the test if anything touches it."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the runtime was used ({name}) by a plain call")


@pytest.fixture
def no_runtime() -> Iterator[None]:
    previous = _runtime.install(NoRuntime())  # type: ignore[arg-type]
    try:
        yield
    finally:
        _runtime.install(previous)


# -- names ---------------------------------------------------------------------------


def test_default_name_is_module_and_qualname() -> None:
    registry._REGISTRY.pop(f"{__name__}.module_level", None)
    t = task(profile="default")(module_level)
    assert t.name == f"{module_level.__module__}.module_level"
    assert t.name.endswith("test_registry.module_level")
    assert t.profile == "default"
    assert lookup(t.name) is t
    nested = task(profile="default")(Holder.method)
    assert nested.name == f"{__name__}.Holder.method"


def test_name_override_is_used_for_lookup() -> None:
    name = unique("override")
    t = task(profile="p", name=name)(module_level)
    assert t.name == name
    assert lookup(name) is t
    assert name in registry.registered()
    assert f"{__name__}.module_level" != name


@pytest.mark.parametrize(
    "bad",
    ["1starts-with-digit", "has space", "slash/name", "semi;colon", "x" * 201, "ünïcode", "a\nb"],
)
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not usable"):
        task(profile="p", name=bad)(module_level)
    assert bad not in registry.registered()


@pytest.mark.parametrize("good", ["a", "_x", "app.tasks:enrich-v2", "A" * 200])
def test_names_of_the_allowed_alphabet_are_accepted(good: str) -> None:
    assert task(profile="p", name=good)(module_level).name == good


def test_a_local_function_needs_an_explicit_name() -> None:
    def local() -> None: ...

    with pytest.raises(ValueError, match="give name="):
        task(profile="p")(local)
    assert task(profile="p", name=unique("local"))(local).fn is local


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ValueError):
        task(profile="p", name="")(module_level)


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="is not usable"):
        task(profile="p", name="abc\n")(module_level)


# -- decoration options --------------------------------------------------------------


@pytest.mark.parametrize(
    "option", [{"retries": 3}, {"queue": "q"}, {"idempotency_key": "k"}, {"bind": True}]
)
def test_unknown_task_options_are_refused_pointing_at_using(option: dict[str, Any]) -> None:
    with pytest.raises(TypeError) as caught:
        task(profile="p", **option)
    message = str(caught.value)
    assert next(iter(option)) in message
    assert "using(...)" in message
    assert "policies.yaml" in message


def test_profile_is_required() -> None:
    with pytest.raises(TypeError):
        task(name=unique())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="profile="):
        task(profile="")
    with pytest.raises(TypeError, match="profile="):
        task(profile=None)  # type: ignore[arg-type]


def test_bare_decorator_without_profile_is_refused() -> None:
    with pytest.raises(TypeError):
        task(module_level)  # type: ignore[call-arg]


def test_decorator_call_forms_give_the_same_task() -> None:
    name = unique()
    direct = task(module_level, profile="p", name=name)
    assert isinstance(direct, Task)
    assert lookup(name) is direct


# -- registering twice ---------------------------------------------------------------


def test_registering_the_same_function_again_is_fine() -> None:
    name = unique("same")
    first = task(profile="p", name=name)(module_level)
    second = task(profile="q", name=name)(module_level)
    assert lookup(name) is second
    assert second.fn is first.fn is module_level


def test_another_function_under_a_taken_name_is_refused() -> None:
    name = unique("taken")
    original = task(profile="p", name=name)(module_level)

    with pytest.raises(ValueError, match="already registered"):
        task(profile="p", name=name)(Holder.method)
    assert lookup(name) is original


# -- the Task object -----------------------------------------------------------------


def test_plain_call_runs_inline_without_the_runtime(no_runtime: None) -> None:
    calls: list[tuple[Any, ...]] = []

    def work(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a * 10 + b

    t = task(profile="p", name=unique("inline"))(work)
    assert t(4, b=2) == 42
    assert calls == [(4, 2)]
    with pytest.raises(ZeroDivisionError):
        task(profile="p", name=unique("raise"))(lambda: 1 / 0)()


def test_task_looks_like_its_function() -> None:
    t = task(profile="p", name=unique())(module_level)
    assert t.__name__ == "module_level"
    assert t.__doc__ == "Adds."
    assert t.__wrapped__ is module_level  # type: ignore[attr-defined]
    assert t.name in repr(t) and "profile=p" in repr(t)


def test_signature_carries_name_args_and_kwargs() -> None:
    t = task(profile="p", name=unique())(module_level)
    sig = t.s(1, y=2)
    assert (sig.task, sig.args, sig.kwargs) == (t.name, (1,), {"y": 2})


def test_a_keyword_argument_named_self_is_the_tasks(no_runtime: None) -> None:
    class Recorder:
        def enqueue(self, t: Any, args: Any, kwargs: Any, options: Any) -> Any:
            return (args, kwargs)

    def takes_anything(*args: Any, **kwargs: Any) -> Any:
        return (args, kwargs)

    t = task(profile="p", name=unique())(takes_anything)
    assert t(self=1) == ((), {"self": 1})
    assert t.s(self=2).kwargs == {"self": 2}
    previous = _runtime.install(Recorder())  # type: ignore[arg-type]
    try:
        assert t.enqueue(self=3) == ((), {"self": 3})
        assert t.using(delay=1).enqueue(self=4) == ((), {"self": 4})
    finally:
        _runtime.install(previous)


# -- using() -------------------------------------------------------------------------


def test_using_binds_options_without_touching_the_runtime(no_runtime: None) -> None:
    t = task(profile="p", name=unique())(module_level)
    bound = t.using(idempotency_key="doc-1", delay=2.5)
    assert isinstance(bound, BoundTask)
    assert bound.task is t
    assert bound.options == CallOptions(idempotency_key="doc-1", delay=2.5)
    assert t.using().options == CallOptions()


@pytest.mark.parametrize(
    "options",
    [
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 201},
        {"idempotency_key": 5},
        {"idempotency_key": b"bytes"},
        {"delay": -1},
        {"delay": -0.001},
        {"delay": "5"},
        {"delay": True},
        {"delay": [1]},
    ],
    ids=repr,
)
def test_using_validates_its_options(options: dict[str, Any]) -> None:
    t = task(profile="p", name=unique())(module_level)
    with pytest.raises(ValueError) as caught:
        t.using(**options)
    assert next(iter(options)) in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        {"idempotency_key": "k"},
        {"idempotency_key": "k" * 200},
        {"delay": 0},
        {"delay": 0.25},
        {"delay": 3600},
        {"idempotency_key": None, "delay": None},
    ],
    ids=repr,
)
def test_using_accepts_valid_options(options: dict[str, Any]) -> None:
    t = task(profile="p", name=unique())(module_level)
    for key, value in options.items():
        assert getattr(t.using(**options).options, key) == value


def test_using_refuses_unknown_options() -> None:
    t = task(profile="p", name=unique())(module_level)
    with pytest.raises(TypeError, match="retries"):
        t.using(retries=3)


def test_call_options_are_immutable() -> None:
    options = CallOptions(idempotency_key="k")
    with pytest.raises(AttributeError):
        options.idempotency_key = "other"  # type: ignore[misc]


# -- lookup --------------------------------------------------------------------------


def test_lookup_of_an_unknown_name_raises_task_not_registered() -> None:
    name = unique("missing")
    with pytest.raises(TaskNotRegistered) as caught:
        lookup(name)
    err = caught.value
    assert isinstance(err, LookupError) and isinstance(err, TaskrouterError)
    assert err.name == name
    assert repr(name) in str(err)
    assert "--app" in str(err) and "import" in str(err)


def test_registered_returns_a_copy() -> None:
    name = unique()
    task(profile="p", name=name)(module_level)
    snapshot = registry.registered()
    snapshot.pop(name)
    assert name in registry.registered()
