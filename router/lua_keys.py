"""The Lua scripts' key table, rendered from ``Keys`` so that every key is named once.

Each public member of ``Keys`` becomes an entry of a Lua table ``K``: a property (or a
method without parameters) a string, a method a function of the same parameters::

    K.schedule = prefix .. ':schedule'
    function K.job(job_id) return prefix .. ':job:' .. job_id end

An entry is found by calling the member with markers in place of the prefix and of each
parameter, and reading its result back as literal text and markers. That holds while a
key is the prefix and the parameters joined by literal text; a member that computes
anything else from them (changes a parameter, or branches on one) is refused here rather
than rendered wrong.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from .keys import Keys

# Python's shorthand for index_all / index_of(field, value): it branches on its default.
PYTHON_ONLY = frozenset({"index"})

_MARK = "\x00{}\x00"
_PIECE = re.compile("\x00([^\x00]*)\x00")
# Lua's reserved words, and the two names of the table itself: not usable as parameters.
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


def _entry(name: str, member: Any) -> str:
    if isinstance(member, property):
        return f"K.{name} = {_lua(getattr(Keys(_MARK.format('prefix')), name), [])}"
    method: Callable[..., str] = getattr(Keys(_MARK.format("prefix")), name)
    signature = inspect.signature(method)
    params = list(signature.parameters)
    if bad := [p for p in params if p in _LUA_WORDS]:
        raise ValueError(f"Keys.{name}: parameter names {bad} are taken in Lua")
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
        return f"K.{name} = {body}"
    return f"function K.{name}({', '.join(params)}) return {body} end"


@cache
def lua_key_table() -> str:
    """Lua that defines ``K`` from the key prefix in ARGV[1]. ``prefix`` is local to the
    ``do`` block, so a script can reach a key only through ``K``."""
    members = [
        (name, member)
        for name, member in vars(Keys).items()
        if not name.startswith("_")
        and name not in PYTHON_ONLY
        and (isinstance(member, property) or inspect.isfunction(member))
    ]
    lines = [
        "-- Every key the scripts use: rendered from router/keys.py (taskrouter.lua_keys).",
        "local K = {}",
        "do",
        "  local prefix = ARGV[1]",
        *(f"  {_entry(name, member)}" for name, member in members),
        "end",
    ]
    return "\n".join(lines) + "\n"
