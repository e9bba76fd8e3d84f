"""The commands that read: ``status``, ``jobs``, ``workers``."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from taskrouter.errors import JobNotFound
from taskrouter.settings import Settings

from .cli_common import friendly, policy_option


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the job as JSON")
@policy_option
@friendly
def status(job_id: str, as_json: bool, policy_path: str | None) -> None:
    """Show one job, whichever engine ran it, or one workflow and its member jobs."""
    from taskrouter import get_job

    if policy_path:
        os.environ["TASKROUTER_POLICY"] = policy_path

    flow: dict[str, Any] = {}
    try:
        found = get_job(job_id)
        job, flow = found.to_dict(), found.flow_dict()
    except JobNotFound:
        job = _workflow_or_not_found(job_id)  # [workflows] a workflow id shows the workflow
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    for key, value in job.items():
        if key == "jobs":  # [workflows] one line per member, in order
            click.echo("jobs:")
            for m in value:
                click.echo(f"  {m['id']}  {m['state']:9}  {m['backend']:6}  {m['task']}")
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value)
        click.echo(f"{key:12} {'' if value is None else value}")
    # What the task reported of itself (taskrouter.flow); not in the contract's JSON.
    if progress := flow.get("progress"):
        click.echo(f"{'progress':12} {progress['fraction']:.0%} {progress['message']}".rstrip())
    if names := flow.get("checkpoints"):
        click.echo(f"{'checkpoints':12} {', '.join(names)}")


def _workflow_or_not_found(some_id: str) -> dict[str, Any]:
    # [workflows] job ids and workflow ids look alike: a status of either works.
    from taskrouter import get_workflow

    try:
        return get_workflow(some_id).to_dict()
    except JobNotFound:
        missing = JobNotFound(some_id)
        missing.args = (f"job or workflow {some_id!r} not found",)
        raise missing from None


@click.command()
@click.option(
    "--state",
    type=click.Choice(
        ["queued", "scheduled", "running", "retrying", "succeeded", "failed", "canceled"]
    ),
)
@click.option("--profile", default=None)
@click.option("--backend", type=click.Choice(["celery", "rq"]), default=None)
@click.option("--task", "task_name", default=None, metavar="NAME")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page")
@click.option("--json", "as_json", is_flag=True, help="the page as the API's JSON")
@friendly
def jobs(
    state: str | None,
    profile: str | None,
    backend: str | None,
    task_name: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List jobs of both engines, newest first (the same query as GET /jobs)."""
    from taskrouter.backends.queries import JobFilter, list_jobs
    from taskrouter.backends.store import JobStore

    settings = Settings.from_env()
    # The records alone: no policy file or engine is needed to read them.
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        filters = JobFilter(state=state, profile=profile, backend=backend, task=task_name)
        page = list_jobs(store, filters, limit=limit, cursor=cursor)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(page.to_dict(), indent=2))
        return
    click.echo(_jobs_table([job.to_dict() for job in page.items]))
    if page.next_cursor:
        click.echo(f"\nmore: taskrouter jobs ... --cursor {page.next_cursor}")


_JOB_COLUMNS = ("id", "task", "profile", "backend", "state", "attempts", "created_at")


def _jobs_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no jobs"
    cells = [[str(r.get(c) if r.get(c) is not None else "") for c in _JOB_COLUMNS] for r in rows]
    return _table([c.upper() for c in _JOB_COLUMNS], cells)


def _table(header: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *cells]
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the workers as JSON")
@friendly
def workers(as_json: bool) -> None:
    """List live workers of every engine and lane, counted as `celery inspect` and
    `rq info` count them, with their processes and queues."""
    from dataclasses import asdict

    from taskrouter.backends.heartbeats import WorkerRegistry, counted
    from taskrouter.backends.store import JobStore

    settings = Settings.from_env()
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    try:
        live = WorkerRegistry(store, settings.worker_alive_window).live()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([asdict(w) for w in live], indent=2))
        return
    if not live:
        click.echo("no live worker")
        return
    rows = [
        [
            w.engine,
            w.lane,
            str(counted(w)),
            w.name,
            " ".join(str(p.get("pid")) for p in w.processes),
            ",".join(w.queues),
        ]
        for w in live
    ]
    click.echo(_table(["ENGINE", "LANE", "WORKERS", "NAME", "PROCESSES", "QUEUES"], rows))
    totals: dict[str, int] = {}
    for w in live:
        totals[w.engine] = totals.get(w.engine, 0) + counted(w)
    click.echo("\n" + ", ".join(f"{n} {engine} workers" for engine, n in sorted(totals.items())))
