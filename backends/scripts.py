"""The text of every Lua script (``lua/*.lua``), composed once for the whole package.

A script runs as the key table rendered from ``Keys`` (``taskrouter.lua_keys``: the
keys its text names), then ``common.lua``, then ``wf_common.lua`` for the workflow
scripts (``wf_*``), then its own body; Redis sees one chunk, so the helpers are local
functions of every script. Every script takes the key prefix in ARGV[1] and no KEYS
(KEYS[1] is ignored where given).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from taskrouter.lua_keys import lua_key_table

LUA = Path(__file__).with_name("lua")
LIBRARIES = ("common", "wf_common")
_USES = re.compile(r"\bK\.(\w+)")


def _compose() -> dict[str, str]:
    common = (LUA / "common.lua").read_text()
    workflow = common + "\n" + (LUA / "wf_common.lua").read_text()
    scripts = {}
    for path in sorted(LUA.glob("*.lua")):
        if path.stem in LIBRARIES:
            continue
        text = (workflow if path.stem.startswith("wf_") else common) + "\n" + path.read_text()
        # Only the keys the text names: the table is rebuilt on every run. A name that
        # Keys lacks (a typo) fails here, at import, not in Redis.
        scripts[path.stem] = lua_key_table(_USES.findall(text)) + "\n" + text
    return scripts


SCRIPTS: dict[str, str] = _compose()


def register(client: Any) -> dict[str, Any]:
    """redis-py Script objects of every script on ``client`` (EVALSHA, loading a script
    on a NOSCRIPT reply); nothing is sent until one runs."""
    return {name: client.register_script(text) for name, text in SCRIPTS.items()}
