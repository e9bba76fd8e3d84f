"""Every Lua script's text, composed once: common.lua (and wf_common.lua for the
workflow scripts) before each script's body."""

from __future__ import annotations

from pathlib import Path

_LUA = Path(__file__).with_name("lua")
JOB_SCRIPTS = (
    "create",
    "claim",
    "finish",
    "renew",
    "take_due",
    "cancel",
    "reap",
    "sweep",
    "requeue_stale",
    "requeue_held",
)
WORKFLOW_SCRIPTS = ("wf_create", "wf_done", "wf_arrive", "wf_continue", "wf_cancel")


def _compose() -> dict[str, str]:
    common = (_LUA / "common.lua").read_text()
    wf_common = common + "\n" + (_LUA / "wf_common.lua").read_text()
    texts = {n: common + "\n" + (_LUA / f"{n}.lua").read_text() for n in JOB_SCRIPTS}
    texts.update({n: wf_common + "\n" + (_LUA / f"{n}.lua").read_text() for n in WORKFLOW_SCRIPTS})
    return texts


SCRIPTS = _compose()
