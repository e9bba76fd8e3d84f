"""router.codec: the JSON codec of arguments and results on both engines."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import pickle
import uuid
from collections import OrderedDict, namedtuple
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrouter import codec
from taskrouter.errors import PayloadError, TaskrouterError

# -- strategies ------------------------------------------------------------------------

_fixed_zones = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)).map(
        # Offsets in whole seconds: isoformat() writes no finer offset than that.
        lambda d: dt.timedelta(seconds=int(d.total_seconds()))
    ),
)
_finite_floats = st.floats(allow_nan=False, allow_infinity=False)
_decimals = st.decimals(allow_nan=False)  # Decimal("NaN") != itself; tested on its own

# Hashable supported values: what may be a set member or a dict key.
_hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    _finite_floats,
    st.text(),
    st.binary(max_size=32),
    st.uuids(),
    _decimals,
    st.dates(),
    st.times(timezones=st.none() | _fixed_zones),
    st.datetimes(timezones=st.none() | _fixed_zones),
    st.timedeltas(),
)
_hashables = st.recursive(
    _hashable_leaves, lambda inner: st.tuples(inner, inner) | st.tuples(inner), max_leaves=6
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        # Non-string keys, and dicts that use the codec's own tag key.
        st.dictionaries(_hashables, inner, max_size=4),
        st.dictionaries(st.sampled_from([codec.TAG, "v", "x"]), inner, max_size=3),
        st.sets(_hashables, max_size=4),
    )


supported = st.recursive(_hashable_leaves, _containers, max_leaves=20)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (True is not 1, (1,) is not [1])."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        # Keys compared with their types too: find each key's twin in b.
        for key, value in a.items():
            twins = [k for k in b if _same(k, key)]
            if len(twins) != 1 or not _same(value, b[twins[0]]):
                return False
        return True
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(_same(x, y) for y in b) for x in a)
    if isinstance(a, dt.datetime | dt.time):
        return a == b and (a.utcoffset() == b.utcoffset() if a.tzinfo else b.tzinfo is None)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# -- round trips -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(supported)
def test_dumps_then_loads_gives_back_the_same_value_and_types(value: Any) -> None:
    text = codec.dumps(value)
    assert isinstance(text, str)
    back = codec.loads(text)
    assert _same(back, value), (value, back)
    # Bytes in, the same out.
    assert _same(codec.loads(text.encode("utf-8")), value)


@settings(max_examples=200, deadline=None)
@given(st.lists(supported, max_size=4), st.dictionaries(st.text(max_size=10), supported))
def test_encode_call_then_decode_call_gives_back_args_and_kwargs(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    payload = codec.encode_call(tuple(args), kwargs)
    json.loads(payload)  # plain JSON on the wire
    back_args, back_kwargs = codec.decode_call(payload)
    assert type(back_args) is tuple
    assert _same(back_args, tuple(args))
    assert _same(back_kwargs, kwargs)


@settings(max_examples=200, deadline=None)
@given(supported)
def test_plain_output_is_json_serialisable(value: Any) -> None:
    json.dumps(codec.plain(value), allow_nan=False)


EVERY_TYPE: dict[str, Any] = {
    "str": "héllo ✓",
    "int": -(2**70),
    "float": 1.5e-300,
    "negative zero": -0.0,
    "bool": True,
    "none": None,
    "list": [1, "a", None],
    "tuple": (1, (2, (3,)), []),
    "empty tuple": (),
    "dict": {"a": {"b": [1, 2]}},
    "set": {1, "a", (2, 3)},
    "empty set": set(),
    "datetime naive": dt.datetime(2026, 11, 24, 5, 0, 0, 123456),
    "datetime aware": dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    "datetime utc": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(23, 59, 59, 999999),
    "time aware": dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=9, minutes=30))),
    "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "decimal": Decimal("3.14159265358979323846264338327950288"),
    "decimal inf": Decimal("-Infinity"),
    "bytes": b"\x00\xff\x80binary",
    "empty bytes": b"",
    "dict with tag key": {codec.TAG: "tuple", "v": [1, 2]},
    "dict with only the tag key": {codec.TAG: "datetime"},
    "dict with int keys": {1: "one", 2: "two"},
    "dict with mixed keys": {1: "a", "1": "b", (1, 2): "c", None: "d", 2.5: "e", b"k": "f"},
    "dict with tuple keys, nested": {("a", (1, 2)): {(3,): [4]}},
    "dict with datetime keys": {dt.date(2020, 1, 1): 1, uuid.UUID(int=7): 2},
    "dict with bool and int keys": {True: "t", 2: "two"},
    "nested everything": [{"x": ({1, 2}, b"b", dt.timedelta(1))}, {(1,): Decimal("1.0")}],
}


@pytest.mark.parametrize("value", list(EVERY_TYPE.values()), ids=list(EVERY_TYPE))
def test_every_supported_type_round_trips(value: Any) -> None:
    back = codec.loads(codec.dumps(value))
    assert _same(back, value), back
    args, kwargs = codec.decode_call(codec.encode_call((value, [value]), {"k": value}))
    assert _same(args, (value, [value]))
    assert _same(kwargs, {"k": value})


def test_bytearray_and_memoryview_come_back_as_bytes() -> None:
    assert codec.loads(codec.dumps(bytearray(b"ab"))) == b"ab"
    assert codec.loads(codec.dumps(memoryview(b"cd"))) == b"cd"


def test_decimal_nan_round_trips_as_nan() -> None:
    assert codec.loads(codec.dumps(Decimal("NaN"))).is_nan()


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Name(enum.StrEnum):
    ADA = "ada"


Point = namedtuple("Point", "x y")


def test_subclasses_of_json_types_keep_their_json_meaning() -> None:
    assert codec.loads(codec.dumps(Level.HIGH)) == 3
    assert type(codec.loads(codec.dumps(Level.HIGH))) is int
    assert codec.loads(codec.dumps(Name.ADA)) == "ada"
    assert type(codec.loads(codec.dumps(Name.ADA))) is str
    assert codec.loads(codec.dumps(Point(1, 2))) == (1, 2)
    assert type(codec.loads(codec.dumps(Point(1, 2)))) is tuple
    assert codec.loads(codec.dumps(OrderedDict(b=1, a=2))) == {"b": 1, "a": 2}


def test_tagged_output_is_what_the_module_documents() -> None:
    assert json.loads(codec.dumps((1, 2))) == {codec.TAG: "tuple", "v": [1, 2]}
    user = json.loads(codec.dumps({codec.TAG: "x"}))
    assert user == {codec.TAG: "dict", "v": [[codec.TAG, "x"]]}
    assert codec.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


@pytest.mark.parametrize(
    "value",
    [{frozenset({1, 2}): "pair"}, {frozenset({"a"})}],
    ids=["frozenset dict key", "frozenset in a set"],
)
def test_frozenset_inside_hashable_positions_round_trips(value: Any) -> None:
    assert codec.loads(codec.dumps(value)) == value


# -- refusals when encoding ----------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(bad: float) -> None:
    with pytest.raises(PayloadError) as caught:
        codec.dumps({"a": [1, bad]})
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, TaskrouterError)
    assert "value['a'][1]" in str(caught.value)
    assert "NaN or infinity" in str(caught.value)


def test_nan_in_a_float_subclass_is_refused() -> None:
    class F(float):
        pass

    with pytest.raises(PayloadError):
        codec.dumps(F("nan"))


class Thing:
    pass


@pytest.mark.parametrize(
    "bad",
    [Thing(), object(), Colour.RED, lambda: 1, len, Path("/tmp"), 1 + 2j, range(3), iter([])],
    ids=lambda v: type(v).__name__,
)
def test_arbitrary_objects_are_refused_naming_the_type(bad: object) -> None:
    with pytest.raises(PayloadError) as caught:
        codec.dumps([bad])
    message = str(caught.value)
    assert "value[0]" in message
    assert type(bad).__qualname__ in message


def test_encode_call_names_the_bad_positional_argument() -> None:
    with pytest.raises(PayloadError) as caught:
        codec.encode_call((1, "ok", {"deep": [Thing()]}), {})
    message = str(caught.value)
    assert message.startswith("argument 2['deep'][0] is ")
    assert "Thing" in message


def test_encode_call_names_the_bad_keyword_argument() -> None:
    with pytest.raises(PayloadError) as caught:
        codec.encode_call((), {"fine": 1, "ratio": math.nan})
    assert str(caught.value).startswith("argument 'ratio' is the float nan")
    with pytest.raises(TypeError):  # what a caller of the task would catch
        codec.encode_call((), {"when": dt.UTC})


def test_bad_dict_key_and_set_member_are_refused() -> None:
    with pytest.raises(PayloadError, match=r"value\.key"):
        codec.dumps({Thing(): 1})
    with pytest.raises(PayloadError, match=r"value\{\}"):
        codec.dumps({Colour.RED})


def test_dumps_names_its_argument_in_the_message() -> None:
    with pytest.raises(PayloadError, match=r"^the return value is "):
        codec.dumps(Thing(), "the return value")


def test_self_containing_values_are_refused_not_crashed_on() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(PayloadError, match="nested too deeply"):
        codec.dumps(loop)
    cyclic: dict[str, Any] = {}
    cyclic["me"] = cyclic
    with pytest.raises(PayloadError, match="argument 'x' is nested too deeply"):
        codec.encode_call((), {"x": cyclic})


def test_very_deep_nesting_is_refused_with_payload_error() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(PayloadError):
        codec.dumps(deep)


def test_moderate_nesting_round_trips() -> None:
    deep: Any = "x"
    for _ in range(codec.MAX_DEPTH // 2):
        deep = [(deep,)]
    assert codec.loads(codec.dumps(deep)) == deep


def _nested(depth: int, kind: str = "list") -> Any:
    value: Any = 1
    for _ in range(depth):
        value = (
            {codec.TAG: value} if kind == "tagged dict" else [value] if kind == "list" else (value,)
        )
    return value


@pytest.mark.parametrize("kind", ["list", "tuple", "tagged dict"])
def test_nesting_up_to_the_limit_round_trips_and_one_more_is_refused_naming_it(
    kind: str,
) -> None:
    deepest = _nested(codec.MAX_DEPTH, kind)
    args, kwargs = codec.decode_call(codec.encode_call((deepest,), {"k": deepest}))
    assert args == (deepest,) and kwargs == {"k": deepest}
    for call in ((_nested(codec.MAX_DEPTH + 1, kind),), {}), ((), {"k": _nested(1000, kind)}):
        with pytest.raises(PayloadError) as caught:
            codec.encode_call(*call)
        message = str(caught.value)
        assert message.startswith(("argument 0 ", "argument 'k' "))
        assert f"at most {codec.MAX_DEPTH} levels" in message


@pytest.mark.parametrize("depth", [codec.MAX_DEPTH + 1, 950, 100_000])
def test_check_depth_answers_for_any_depth_with_the_encoders_message(depth: int) -> None:
    codec.check_depth(_nested(codec.MAX_DEPTH), "argument 0")
    codec.check_depth({"a": [_nested(codec.MAX_DEPTH - 2)]}, "argument 0")
    with pytest.raises(PayloadError) as checked:
        codec.check_depth({"a": _nested(depth)}, "argument 'a'")
    with pytest.raises(PayloadError) as encoded:
        codec.to_jsonable({"a": _nested(depth)}, "argument 'a'")
    assert str(checked.value) == str(encoded.value)


def test_encoded_depth_of_the_deepest_value_fits_json_and_lua_limits() -> None:
    # Each user level costs at most three JSON levels (a tagged dict of pairs); the
    # decoders (json, Redis's cjson) stop at 1000.
    payload = codec.encode_call((_nested(codec.MAX_DEPTH, "tagged dict"),), {})
    assert payload.count("[") < 1000 - 100
    assert codec.decode_call(payload)[0][0] == _nested(codec.MAX_DEPTH, "tagged dict")


# -- refusals when decoding ----------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    ["", "not json", "{", "[1,", b"\xff\xfe\x00", "{'single': 'quotes'}", "[1] [2]"],
)
def test_loads_of_garbage_raises_payload_error(garbage: str | bytes) -> None:
    with pytest.raises(PayloadError):
        codec.loads(garbage)


def test_loads_of_an_unknown_tag_raises_payload_error() -> None:
    with pytest.raises(PayloadError, match="unknown type tag 'pickle'"):
        codec.loads('{"__tr__": "pickle", "v": "gASVAAAA"}')
    with pytest.raises(PayloadError):
        codec.loads('{"__tr__": ["tuple"], "v": []}')
    with pytest.raises(PayloadError):
        codec.loads('[{"__tr__": 5, "v": 1}]')


@pytest.mark.parametrize(
    "tagged",
    [
        '{"__tr__": "datetime", "v": "yesterday"}',
        '{"__tr__": "datetime", "v": 5}',
        '{"__tr__": "date", "v": "2026-13-01"}',
        '{"__tr__": "time", "v": "25:00"}',
        '{"__tr__": "timedelta", "v": "1 day"}',
        '{"__tr__": "timedelta", "v": [1e300, 0, 0]}',
        '{"__tr__": "uuid", "v": "not-a-uuid"}',
        '{"__tr__": "decimal", "v": "twelve"}',
        '{"__tr__": "decimal", "v": [1]}',
        '{"__tr__": "bytes", "v": "***"}',
        '{"__tr__": "bytes", "v": "é"}',
        '{"__tr__": "set", "v": [[1]]}',
        '{"__tr__": "set", "v": 3}',
        '{"__tr__": "tuple", "v": 3}',
        '{"__tr__": "dict", "v": [[1]]}',
        '{"__tr__": "dict", "v": [[{"a": 1}, 2]]}',
        '{"__tr__": "dict", "v": 7}',
    ],
)
def test_loads_of_a_bad_tagged_value_raises_payload_error(tagged: str) -> None:
    with pytest.raises(PayloadError, match=r"bad .* value in a taskrouter payload"):
        codec.loads(tagged)


@pytest.mark.parametrize(
    "tagged",
    [
        '{"__tr__": "bytes", "v": 1}',
        '{"__tr__": "uuid", "v": 5}',
        '{"__tr__": "uuid", "v": [1]}',
        '{"__tr__": "timedelta", "v": [1]}',
    ],
)
def test_loads_of_a_wrongly_typed_tagged_value_raises_payload_error(tagged: str) -> None:
    with pytest.raises(PayloadError):
        codec.loads(tagged)


def test_loads_of_a_deeply_nested_document_raises_payload_error() -> None:
    with pytest.raises(PayloadError):
        codec.loads("[" * 100_000 + "]" * 100_000)


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (_Boom.target,))

    target = Path("/nonexistent")


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_loads_never_unpickles(protocol: int, tmp_path: Path) -> None:
    _Boom.target = tmp_path / "pwned"
    for blob in (pickle.dumps({"a": (1, 2)}, protocol), pickle.dumps(_Boom(), protocol)):
        with pytest.raises(PayloadError):
            codec.loads(blob)
        with pytest.raises(PayloadError):
            codec.decode_call(blob)
    assert not _Boom.target.exists()


@pytest.mark.parametrize(
    "payload",
    [
        "[]",
        "null",
        '"a"',
        '{"k": {}}',
        '{"a": {"x": 1}, "k": {}}',
        '{"a": {"__tr__": "tuple", "v": [1]}, "k": {}}',
        '{"a": [], "k": 5}',
        '{"a": [], "k": "x"}',
        "garbage",
    ],
)
def test_decode_call_refuses_what_encode_call_cannot_make(payload: str) -> None:
    with pytest.raises(PayloadError):
        codec.decode_call(payload)


@pytest.mark.parametrize(
    "kwargs",
    [
        {codec.TAG: "dict", "v": [["x", 1]]},
        {codec.TAG: "d", "v": [["x", 1]]},
        {codec.TAG: "tuple", "v": [1, 2]},
        {codec.TAG: "datetime", "v": "2026-01-01T00:00:00"},
        {codec.TAG: None},
        {codec.TAG: "set", "v": [1], "other": 2},
    ],
    ids=["dict tag", "unknown tag", "tuple tag", "datetime tag", "tag alone", "three keys"],
)
def test_keyword_arguments_named_like_the_tag_reach_the_task_as_sent(
    kwargs: dict[str, Any],
) -> None:
    assert codec.decode_call(codec.encode_call((kwargs,), kwargs)) == ((kwargs,), kwargs)


def test_payloads_of_the_earlier_encoding_still_decode() -> None:
    # What encode_call wrote before tag-named keyword arguments were wrapped.
    old = '{"a":[1,{"__tr__":"tuple","v":[2]}],"k":{"x":{"__tr__":"dict","v":[["__tr__",3]]}}}'
    assert codec.decode_call(old) == ((1, (2,)), {"x": {codec.TAG: 3}})


def test_decode_call_refuses_keyword_names_that_are_not_strings() -> None:
    with pytest.raises(PayloadError):
        codec.decode_call('{"a":[],"k":{"__tr__":"dict","v":[[1,2]]}}')


# Any JSON document: what a client can send through the HTTP API or enqueue().
_json_keys = st.text(max_size=6) | st.sampled_from([codec.TAG, "v"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | _finite_floats
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_json_keys, inner, max_size=4)
        # A user dict shaped exactly like a tagged value.
        | st.fixed_dictionaries({codec.TAG: st.sampled_from(sorted(codec._DECODERS)), "v": inner})
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(json_values, max_size=3),
    st.dictionaries(_json_keys, json_values, max_size=3)
    | st.fixed_dictionaries(
        {codec.TAG: st.sampled_from(sorted(codec._DECODERS)), "v": json_values}
    ),
)
def test_any_json_arguments_round_trip_exactly(args: list[Any], kwargs: dict[str, Any]) -> None:
    back_args, back_kwargs = codec.decode_call(codec.encode_call(tuple(args), kwargs))
    assert _same(back_args, tuple(args))
    assert _same(back_kwargs, kwargs)
    # The same through JSON text, as the API receives it.
    sent = json.loads(json.dumps({"args": args, "kwargs": kwargs}))
    assert codec.decode_call(codec.encode_call(tuple(sent["args"]), sent["kwargs"])) == (
        tuple(args),
        kwargs,
    )


def test_decode_call_without_kwargs_gives_an_empty_dict() -> None:
    assert codec.decode_call('{"a": [1]}') == ((1,), {})


# -- plain ---------------------------------------------------------------------------


def test_plain_drops_tags_for_people() -> None:
    value = {
        "t": (1, (2,)),
        "s": {3},
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(3, 4),
        "for": dt.timedelta(minutes=1, milliseconds=500),
        "blob": b"\x00\x01",
        "n": Decimal("1.10"),
        "id": uuid.UUID(int=1),
        1: "int key",
        (1, 2): "tuple key",
        codec.TAG: "user tag",
    }
    assert codec.plain(value) == {
        "t": [1, [2]],
        "s": [3],
        "when": "2026-01-02T03:04:05+00:00",
        "day": "2026-01-02",
        "at": "03:04:00",
        "for": 60.5,
        "blob": "AAE=",
        "n": "1.10",
        "id": "00000000-0000-0000-0000-000000000001",
        "1": "int key",
        "(1, 2)": "tuple key",
        codec.TAG: "user tag",
    }


def test_plain_of_decoded_values_matches_plain_of_the_originals() -> None:
    # Sets are left out: plain() lists their members in iteration order.
    for name, value in EVERY_TYPE.items():
        if "set" in name or name == "nested everything":
            continue
        assert codec.plain(codec.loads(codec.dumps(value))) == codec.plain(value)
