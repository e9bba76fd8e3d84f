"""The Lua key table rendered from Keys, and the scripts composed with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from taskrouter import lua_keys
from taskrouter.backends.scripts import LUA, SCRIPTS
from taskrouter.keys import Keys
from taskrouter.lua_keys import PYTHON_ONLY, lua_key_table


def test_no_script_builds_a_key_of_its_own() -> None:
    # A key built in a .lua file would not follow a rename in keys.py: only K builds them.
    # The prefix is local to the key table, so `prefix ..` in a script would not even run.
    built = re.compile(r"\bprefix\s*\.\.|'[:][A-Za-z_]")
    offenders = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(LUA.glob("*.lua"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if built.search(line.split("--")[0])
    ]
    assert offenders == []


def test_the_table_has_every_key_as_keys_py_builds_it() -> None:
    table = lua_key_table()
    assert "  K.schedule = prefix .. ':schedule'\n" in table
    assert "  function K.job(job_id) return prefix .. ':job:' .. job_id end\n" in table
    assert "  K.counters = prefix .. ':counters'\n" in table  # a method without parameters
    assert (
        "  function K.index_of(field, value) return prefix .. ':idx:' .. field .. ':' .. value end"
        in table
    )
    members = {n for n in vars(Keys) if not n.startswith("_") and n != "prefix"} - PYTHON_ONLY
    assert set(re.findall(r"K\.(\w+)", table)) == members


def test_a_key_that_is_not_plain_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True, slots=True)
    class Odd(Keys):
        def shouted(self, name: str) -> str:
            return f"{self.prefix}:x:{name.upper()}"

        def quoted(self, name: str) -> str:
            return f"{self.prefix}:it's:{name}"

    monkeypatch.setattr(lua_keys, "Keys", Odd)
    with pytest.raises(ValueError, match="once each"):
        lua_keys._entry("shouted", Odd.shouted)
    with pytest.raises(ValueError, match="Lua literal"):
        lua_keys._entry("quoted", Odd.quoted)


def test_a_key_that_branches_on_a_default_is_refused() -> None:
    with pytest.raises(ValueError, match="branches on its defaults"):
        lua_keys._entry("index", Keys.index)


def test_every_script_starts_with_the_key_table_and_the_helpers() -> None:
    names = {p.stem for p in LUA.glob("*.lua")} - {"common", "wf_common"}
    assert set(SCRIPTS) == names
    common, wf_common = (LUA / "common.lua").read_text(), (LUA / "wf_common.lua").read_text()
    for name, text in SCRIPTS.items():
        assert text.startswith(lua_key_table() + "\n" + common), name
        assert (wf_common in text) == name.startswith("wf_"), name
        assert text.endswith((LUA / f"{name}.lua").read_text()), name
