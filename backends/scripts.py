"""The text of every Lua script (``lua/*.lua``), composed once for the whole package.

A script runs as the key table rendered from ``Keys`` (``taskrouter.lua_keys``), then
``common.lua``, then ``wf_common.lua`` for the workflow scripts (``wf_*``), then its own
body; Redis sees one chunk, so the helpers are local functions of every script. Every
script takes the key prefix in ARGV[1] and no KEYS (KEYS[1] is ignored where given).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taskrouter.lua_keys import lua_key_table

LUA = Path(__file__).with_name("lua")
LIBRARIES = ("common", "wf_common")


def _compose() -> dict[str, str]:
    common = lua_key_table() + "\n" + (LUA / "common.lua").read_text()
    workflow = common + "\n" + (LUA / "wf_common.lua").read_text()
    return {
        path.stem: (workflow if path.stem.startswith("wf_") else common) + "\n" + path.read_text()
        for path in sorted(LUA.glob("*.lua"))
        if path.stem not in LIBRARIES
    }


SCRIPTS: dict[str, str] = _compose()


def register(client: Any) -> dict[str, Any]:
    """redis-py Script objects of every script on ``client`` (EVALSHA, loading a script
    on a NOSCRIPT reply); nothing is sent until one runs."""
    return {name: client.register_script(text) for name, text in SCRIPTS.items()}
