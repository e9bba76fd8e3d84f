"""``taskrouter schedules``: each schedule of the policy, its next and last run, and the
state of its last job (the same as ``GET /schedules``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from .cli_common import friendly, policy_option, settings_for

if TYPE_CHECKING:
    from taskrouter.schedule import Schedule
    from taskrouter.settings import Settings

COLUMNS = ("name", "task", "when", "missed", "next_run", "last_run", "last_job", "last_job_state")
HEADER = ("NAME", "TASK", "WHEN", "MISSED", "NEXT RUN", "LAST RUN", "LAST JOB", "STATE")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the schedules as the API's JSON")
@policy_option
@friendly
def schedules(as_json: bool, policy_path: str | None) -> None:
    """List the policy's schedules: next and last run, and the last job's state."""
    click.echo(render(schedules_dicts(settings_for(policy_path)), as_json=as_json))


def schedules_dicts(settings: Settings) -> list[dict[str, Any]]:
    """The policy's schedules with their state: the policy file and Redis, no app."""
    from taskrouter.backends.periodic import statuses
    from taskrouter.backends.store import JobStore
    from taskrouter.policy_file import load_policy

    policy = load_policy(settings.policy_path)
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        return [s.to_dict() for s in statuses(store, policy.schedules)]
    finally:
        store.close()


def render(rows: list[dict[str, Any]], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(rows, indent=2)
    if not rows:
        return "no schedules (add a schedules: section to the policy)"
    cells = [["" if r[c] is None else str(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in [list(HEADER), *cells]) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(HEADER), *cells]
    )


def render_defined(schedules: Mapping[str, Schedule]) -> str:
    """The schedules as ``policy check`` lists them after the profiles ("" for none)."""
    if not schedules:
        return ""
    lines = [f"  {s.name}: {s.task}, {s.when}, missed: {s.missed}" for s in schedules.values()]
    return "\n\nschedules (run by janitors and workers whose --app registers the task):\n" + (
        "\n".join(lines)
    )
