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
    assert "    schedule = prefix .. ':schedule',\n" in table
    assert "    job = function(job_id) return prefix .. ':job:' .. job_id end,\n" in table
    assert "    counters = prefix .. ':counters',\n" in table  # a method without parameters
    assert (
        "    index_of = function(field, value) return prefix .. ':idx:' .. field .. ':' .. value"
        " end,\n" in table
    )
    members = {n for n in vars(Keys) if not n.startswith("_") and n != "prefix"} - PYTHON_ONLY
    assert set(re.findall(r"^    (\w+) = ", table, re.M)) == members


def test_a_table_of_some_keys_has_those_only_and_refuses_unknown_ones() -> None:
    table = lua_key_table(["running", "job"])
    assert re.findall(r"^    (\w+) = ", table, re.M) == ["job", "running"]  # in keys.py's order
    with pytest.raises(ValueError, match=r"no such key in router/keys.py: K.shedule"):
        lua_key_table(["job", "shedule"])


def test_a_key_that_is_not_plain_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True, slots=True)
    class Odd(Keys):
        def shouted(self, name: str) -> str:
            return f"{self.prefix}:x:{name.upper()}"

        def quoted(self, name: str) -> str:
            return f"{self.prefix}:it's:{name}"

    monkeypatch.setattr(lua_keys, "Keys", Odd)
    with pytest.raises(ValueError, match="once each"):
        lua_keys._value("shouted", Odd.shouted)
    with pytest.raises(ValueError, match="Lua literal"):
        lua_keys._value("quoted", Odd.quoted)


def test_a_key_that_branches_on_a_default_is_refused() -> None:
    with pytest.raises(ValueError, match="branches on its defaults"):
        lua_keys._value("index", Keys.index)


def test_every_script_is_the_table_of_its_keys_the_helpers_and_its_body() -> None:
    names = {p.stem for p in LUA.glob("*.lua")} - {"common", "wf_common"}
    assert set(SCRIPTS) == names
    common, wf_common = (LUA / "common.lua").read_text(), (LUA / "wf_common.lua").read_text()
    for name, text in SCRIPTS.items():
        table, rest = text.split("\nend\n\n", 1)
        assert rest.startswith(common), name
        assert (wf_common in rest) == name.startswith("wf_"), name
        assert rest.endswith((LUA / f"{name}.lua").read_text()), name
        # The table has exactly the keys the script names.
        assert set(re.findall(r"^    (\w+) = ", table, re.M)) == set(
            re.findall(r"\bK\.(\w+)", rest)
        )


def test_reconcile_names_rq_keys_as_rq_does() -> None:
    from rq.defaults import RQ_KEY_PREFIX
    from rq.executions import Execution, ExecutionRegistry
    from rq.job import Job
    from rq.queue import Queue

    from taskrouter.backends.reconcile import rq_keys

    job, queue, executions, execution = rq_keys(RQ_KEY_PREFIX)
    assert Job.redis_job_namespace_prefix == job
    assert Queue.redis_queue_namespace_prefix == queue
    assert ExecutionRegistry(job_id="J", connection=None).key == executions + "J"  # type: ignore[arg-type]
    assert Execution("E", "J", connection=None).key == execution + "J:E"  # type: ignore[arg-type]


def test_trim_names_rq_registries_as_rq_does() -> None:
    from rq.defaults import RQ_KEY_PREFIX
    from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry

    from taskrouter.backends.trim import rq_registries

    by_score, by_job = rq_registries(RQ_KEY_PREFIX, ["q1", "q2"])
    # redis-py's client is never used to name a key.
    rq = [
        cls(name, connection=object())  # type: ignore[arg-type]
        for name in ("q1", "q2")
        for cls in (FinishedJobRegistry, FailedJobRegistry, CanceledJobRegistry)
    ]
    assert sorted(by_score + by_job) == sorted(r.key for r in rq)
    assert {k.rsplit(":", 2)[1] for k in by_job} == {"canceled"}
