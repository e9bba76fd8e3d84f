"""The Lua key table on a real Redis: every K entry names the key Keys names."""

from __future__ import annotations

import inspect

import pytest
import redis

from taskrouter.keys import Keys
from taskrouter.lua_keys import PYTHON_ONLY, lua_key_table

pytestmark = pytest.mark.integration


def test_lua_builds_the_same_keys_as_keys_py(redis_url: str, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    calls: list[tuple[str, list[str]]] = []  # (member, sample arguments; None: a property)
    for name, member in vars(Keys).items():
        if name.startswith("_") or name in PYTHON_ONLY or name == "prefix":
            continue
        params = [] if isinstance(member, property) else list(inspect.signature(member).parameters)
        calls.append((name, [f"{p}-{i}" for i, p in enumerate(params[1:])]))
    expected = []
    lua = []
    for name, args in calls:
        value = getattr(keys, name)
        expected.append(value if isinstance(value, str) else value(*args))
        quoted = ", ".join(f"'{a}'" for a in args)
        lua.append(f"K.{name}({quoted})" if args else f"K.{name}")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        got = client.eval(lua_key_table() + "return {" + ", ".join(lua) + "}", 0, key_prefix)
    finally:
        client.close()
    assert got == expected
    assert len(expected) > 10
