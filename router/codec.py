"""The one JSON codec used on both engines, on both sides of every queue.

Plain JSON loses types (tuples become lists, datetimes are refused) and kombu's own
envelope is unknown to RQ, so arguments and results go through this codec wherever they
cross a process. Types JSON lacks are written as ``{"__tr__": TAG, "v": VALUE}``; a user
dict that happens to use the ``__tr__`` key, or has non-string keys, is written as a
tagged list of pairs, so decoding never mistakes user data for a tag; so is a call's
mapping of keyword arguments when one of them is named ``__tr__``.

An argument or a result may nest containers (lists, tuples, dicts, sets) at most
MAX_DEPTH levels deep. Encoded, each level takes up to three JSON levels (a tagged dict
is an object, a list of pairs and a pair), so the deepest payload, about 300 levels, and
the deepest workflow body the API reads (its 32 levels of nesting in 64 JSON levels, plus
an argument) parse well inside Python's recursion limit of 1000 wherever they are read.

Nothing here can execute code on load: decoding only builds the types listed in _DECODERS.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from .errors import PayloadError

TAG = "__tr__"
# Levels of containers one argument or result may nest: see the module docstring.
MAX_DEPTH = 100

_SCALARS = (str, int, float, bool, type(None))
# What counts as a level of nesting (MAX_DEPTH).
_CONTAINERS = (list, tuple, dict, set, frozenset, Mapping)


class _Unencodable(Exception):
    def __init__(self, path: str, value: object) -> None:
        self.path = path
        self.value = value


class _TooDeep(Exception):
    pass


def _tagged(tag: str, value: Any) -> dict[str, Any]:
    return {TAG: tag, "v": value}


# The types JSON lacks that are leaves: (class, tag, its JSON value). datetime before
# date: a datetime is a date too.
_LEAVES: tuple[tuple[Any, str, Callable[[Any], Any]], ...] = (
    (dt.datetime, "datetime", lambda v: v.isoformat()),
    (dt.date, "date", lambda v: v.isoformat()),
    (dt.time, "time", lambda v: v.isoformat()),
    (dt.timedelta, "timedelta", lambda v: [v.days, v.seconds, v.microseconds]),
    (uuid.UUID, "uuid", str),
    (Decimal, "decimal", str),
    (bytes | bytearray | memoryview, "bytes", lambda v: base64.b64encode(bytes(v)).decode()),
)


_PLAIN: tuple[Callable[[Any], Any], ...] = (bool, int, float, tuple, list)


def _plain_subclass(obj: Any) -> Any:
    """The plain JSON type's value of an instance of a subclass of one, or None."""
    for plain in _PLAIN:
        if isinstance(obj, plain):  # type: ignore[arg-type]
            return plain(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    return None


def _encode(obj: Any, path: str, depth: int = 1) -> Any:
    # Exact type checks first: bool and int are the hot path and must stay cheap.
    kind = type(obj)
    if kind in _SCALARS:
        if kind is float and (obj != obj or obj in (float("inf"), float("-inf"))):
            raise _Unencodable(path, obj)
        return obj
    if depth > MAX_DEPTH and isinstance(obj, _CONTAINERS):
        raise _TooDeep()
    inner = depth + 1
    if kind is list:
        return [_encode(item, f"{path}[{i}]", inner) for i, item in enumerate(obj)]
    if kind is dict:
        if TAG not in obj and all(type(k) is str for k in obj):
            return {k: _encode(v, f"{path}[{k!r}]", inner) for k, v in obj.items()}
        return _tagged(
            "dict",
            [
                [_encode(k, f"{path}.key", inner), _encode(v, f"{path}[{k!r}]", inner)]
                for k, v in obj.items()
            ],
        )
    if kind is tuple:
        return _tagged(
            "tuple", [_encode(item, f"{path}[{i}]", inner) for i, item in enumerate(obj)]
        )
    if isinstance(obj, frozenset | set):  # a frozenset is hashable: a dict key, a member
        tag = "frozenset" if isinstance(obj, frozenset) else "set"
        return _tagged(tag, [_encode(item, f"{path}{{}}", inner) for item in obj])
    for cls, tag, value in _LEAVES:
        if isinstance(obj, cls):
            return _tagged(tag, value(obj))
    plain = _plain_subclass(obj)
    if plain is not None:
        # Subclasses of the JSON types (str enums, int flags, named tuples, OrderedDict)
        # keep their JSON meaning; anything else is refused rather than guessed at.
        return _encode(plain, path, depth)
    raise _Unencodable(path, obj)


def _describe(value: object) -> str:
    if isinstance(value, float):
        return f"the float {value!r} (JSON has no NaN or infinity)"
    return f"a value of type {type(value).__module__}.{type(value).__qualname__}"


def to_jsonable(obj: Any, what: str = "value") -> Any:
    """``obj`` as plain JSON data with type tags; PayloadError names the bad part."""
    try:
        return _encode(obj, what)
    except _Unencodable as exc:
        raise PayloadError(
            f"{exc.path} is {_describe(exc.value)}, which taskrouter cannot encode as JSON: "
            "pass str, int, float, bool, None, list, tuple, dict, set, datetime, date, time, "
            "timedelta, UUID, Decimal or bytes (convert other objects first)"
        ) from None
    except (_TooDeep, RecursionError):
        raise PayloadError(too_deep(what)) from None


def too_deep(what: str) -> str:
    """The message for a value nested deeper than MAX_DEPTH."""
    return (
        f"{what} is nested too deeply: taskrouter takes at most "
        f"{MAX_DEPTH} levels of lists, dicts, tuples or sets in one argument or result; "
        "flatten it, or pass the deep part as a JSON string"
    )


def check_depth(value: Any, what: str = "value") -> None:
    """PayloadError if ``value`` nests containers deeper than MAX_DEPTH (as the encoder)."""
    if deeper_than(value, MAX_DEPTH):
        raise PayloadError(too_deep(what))


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels deep.

    Iterative, unlike the encoder, so that it answers for a value of any depth: the API
    runs it on a parsed body before anything that recurses over it.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, _CONTAINERS):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, Mapping) else item
        stack.extend((child, depth + 1) for child in children)
    return False


def dumps(obj: Any, what: str = "value") -> str:
    """Encode ``obj`` as a compact JSON string."""
    return json.dumps(to_jsonable(obj, what), separators=(",", ":"), ensure_ascii=False)


def _decode_datetime(v: str) -> dt.datetime:
    return dt.datetime.fromisoformat(v)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "tuple": lambda v: tuple(v),
    "datetime": _decode_datetime,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "bytes": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
    "set": lambda v: set(v),
    "frozenset": lambda v: frozenset(v),
    "dict": lambda v: {_hashable(k): val for k, val in v},
}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _object_hook(obj: dict[str, Any]) -> Any:
    tag = obj.get(TAG)
    if tag is None or len(obj) != 2 or "v" not in obj:
        return obj
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise PayloadError(f"unknown type tag {tag!r} in a taskrouter payload")
    try:
        return decoder(obj["v"])
    except (ValueError, TypeError, ArithmeticError, AttributeError, LookupError) as exc:
        raise PayloadError(f"bad {tag} value in a taskrouter payload: {exc}") from None


def loads(data: str | bytes) -> Any:
    """Decode a string made by ``dumps``; PayloadError if it is not valid taskrouter JSON."""
    try:
        return json.loads(data, object_hook=_object_hook)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError(f"not a taskrouter JSON payload: {exc}") from None
    except RecursionError:
        raise PayloadError("taskrouter payload nested too deeply") from None


# What json.dumps(..., separators=(",", ":"), ensure_ascii=False) builds on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# Exactly these types encode as themselves (_encode returns them unchanged).
_AS_IS = frozenset((str, int, bool, type(None)))


def encode_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The payload of one call; PayloadError names the argument that cannot be encoded."""
    # This runs on every enqueue: arguments that are plain str, int, bool or None skip
    # to_jsonable and the error path it is given (a string formatted per argument).
    enc_args = [
        a if type(a) in _AS_IS else to_jsonable(a, f"argument {i}") for i, a in enumerate(args)
    ]
    plain_kwargs = {
        k: v if type(v) in _AS_IS else to_jsonable(v, f"argument {k!r}") for k, v in kwargs.items()
    }
    enc_kwargs: Any = plain_kwargs
    if TAG in enc_kwargs:
        # The mapping of keyword arguments is itself a dict: one named like the tag key
        # would make it read as a tagged value (``f(__tr__="dict", v=[["x", 1]])``).
        enc_kwargs = _tagged("dict", [[k, v] for k, v in enc_kwargs.items()])
    try:
        payload = _COMPACT.encode({"a": enc_args, "k": enc_kwargs})
        if not payload.isascii():  # O(1) flag: only non-ASCII text pays for the check
            payload.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        # An int json will not write (over 4,300 digits) or a str with a lone surrogate
        # (no UTF-8 text holds one, so Redis could not get it): name the argument.
        named = [(f"argument {i}", a) for i, a in enumerate(enc_args)]
        named += [(f"argument {k!r}", v) for k, v in plain_kwargs.items()]
        for what, value in named:
            try:
                _COMPACT.encode(value).encode("utf-8")
            except (ValueError, UnicodeEncodeError) as exc:
                raise PayloadError(f"{what} cannot be stored as JSON text: {exc}") from None
        raise
    return payload


def decode_call(payload: str | bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments and keyword arguments from ``encode_call``."""
    data = loads(payload)
    if not isinstance(data, dict) or not isinstance(data.get("a"), list):
        raise PayloadError("not a taskrouter call payload (expected {'a': [...], 'k': {...}})")
    kwargs = data.get("k") or {}
    if not isinstance(kwargs, dict) or not all(type(k) is str for k in kwargs):
        raise PayloadError("not a taskrouter call payload: 'k' must be an object")
    return tuple(data["a"]), kwargs


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON data for people and HTTP clients: no type tags.

    Tuples and sets become lists, datetimes ISO strings, bytes base64, Decimal strings,
    dicts with non-string keys get string keys. Not reversible; ``dumps`` is.
    """
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, dt.datetime | dt.date | dt.time):
        return obj.isoformat()
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(bytes(obj)).decode("ascii")
    return str(obj)
