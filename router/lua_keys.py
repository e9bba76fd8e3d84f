"""The Lua scripts' key table, rendered from ``Keys`` so that every key is named once.

Each public member of ``Keys`` becomes an entry of a Lua table ``K``: a property (or a
method without parameters) a string, a method a function of the same parameters::

    schedule = prefix .. ':schedule',
    job = function(job_id) return prefix .. ':job:' .. job_id end,

An entry is found by calling the member with markers in place of the prefix and of each
parameter, and reading its result back as literal text and markers. That holds while a
key is the prefix and the parameters joined by literal text; a member that computes
anything else from them (changes a parameter, or branches on one) is refused here rather
than rendered wrong.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from .keys import Keys

# Python's shorthand for index_all / index_of(field, value): it branches on its default.
PYTHON_ONLY = frozenset({"index"})

_MARK = "\x00{}\x00"
_PIECE = re.compile("\x00([^\x00]*)\x00")
# Lua's reserved words, and the two names of the table itself: not usable as names.
_LUA_WORDS = frozenset(
    {
        *("and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto"),
        *("if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true"),
        *("until", "while", "K", "prefix"),
    }
)


def _lua(template: str, params: list[str]) -> str:
    """A key built by a member from markers, as a Lua concatenation of its parameters."""
    parts: list[str] = []
    seen: list[str] = []
    for i, piece in enumerate(_PIECE.split(template)):
        if i % 2:
            seen.append(piece)
            parts.append(piece)
        elif piece:
            if not piece.isprintable() or "\\" in piece or "'" in piece:
                raise ValueError(f"cannot render {piece!r} as a Lua literal")
            parts.append(f"'{piece}'")
    if sorted(seen) != sorted(["prefix", *params]):
        raise ValueError(f"expected the prefix and {params} once each, got {seen}")
    return " .. ".join(parts)


def _value(name: str, member: Any) -> str:
    """The Lua value of K.<name>: a string expression, or a function of the parameters."""
    if isinstance(member, property):
        if name in _LUA_WORDS:
            raise ValueError(f"Keys.{name}: the name is taken in Lua")
        return _lua(getattr(Keys(_MARK.format("prefix")), name), [])
    method: Callable[..., str] = getattr(Keys(_MARK.format("prefix")), name)
    signature = inspect.signature(method)
    params = list(signature.parameters)
    if bad := [p for p in [name, *params] if p in _LUA_WORDS]:
        raise ValueError(f"Keys.{name}: the names {bad} are taken in Lua")
    template = method(*(_MARK.format(p) for p in params))
    body = _lua(template, params)
    # A default the result branches on (index's "all") would be lost in Lua: refuse it.
    required = [p for p in params if signature.parameters[p].default is inspect.Parameter.empty]
    if len(required) < len(params):
        filled = template
        for p in params[len(required) :]:
            filled = filled.replace(_MARK.format(p), str(signature.parameters[p].default))
        if method(*(_MARK.format(p) for p in required)) != filled:
            raise ValueError(f"Keys.{name} branches on its defaults; list it in PYTHON_ONLY")
    if not params:
        return body
    return f"function({', '.join(params)}) return {body} end"


@cache
def entries() -> dict[str, str]:
    """Every entry of the key table, name: Lua value, in the order of ``Keys``."""
    return {
        name: _value(name, member)
        for name, member in vars(Keys).items()
        if not name.startswith("_")
        and name not in PYTHON_ONLY
        and (isinstance(member, property) or inspect.isfunction(member))
    }


def lua_key_table(names: Iterable[str] | None = None) -> str:
    """Lua that defines ``K`` from the key prefix in ARGV[1]: the entries ``names``, or
    all. ``prefix`` is local to the ``do`` block, so a script can reach a key only
    through ``K``. The table is built on every run of a script (Redis keeps no state
    between runs), in one constructor: a script asks only for the keys it uses."""
    table = entries()
    wanted = set(table) if names is None else set(names)
    if unknown := sorted(wanted - set(table)):
        raise ValueError(f"no such key in router/keys.py: {', '.join('K.' + n for n in unknown)}")
    lines = [
        "-- The keys of this script, rendered from router/keys.py (taskrouter.lua_keys).",
        "local K",
        "do",
        "  local prefix = ARGV[1]",
        "  K = {",
        *(f"    {name} = {value}," for name, value in table.items() if name in wanted),
        "  }",
        "end",
    ]
    return "\n".join(lines) + "\n"
