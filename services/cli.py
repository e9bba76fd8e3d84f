"""The ``taskrouter`` command."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from taskrouter.errors import JobNotFound, PolicyError, TaskrouterError
from taskrouter.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Print taskrouter errors as one clear message and exit 1, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PolicyError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)
        except JobNotFound as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except TaskrouterError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskrouter", prog_name="taskrouter")
def main() -> None:
    """Send each background task to Celery or RQ by its profile; one status API for all."""


# -- policy -------------------------------------------------------------------------------


@main.group()
def policy() -> None:
    """Check and explain policies.yaml."""


def _policy_option(fn: F) -> F:
    return click.option(
        "--policy",
        "policy_path",
        default=None,
        metavar="FILE",
        help="policy file (default: $TASKROUTER_POLICY or ./policies.yaml)",
    )(fn)


def _derived(policy_path: str | None) -> Any:
    from taskrouter.derive import derive
    from taskrouter.policy_file import load_policy

    return derive(load_policy(policy_path or Settings.from_env().policy_path))


@policy.command("check")
@_policy_option
@friendly
def policy_check(policy_path: str | None) -> None:
    """Validate the policy; print each profile, its engine and why."""
    from taskrouter.explain import render_check

    click.echo(render_check(_derived(policy_path)))


@policy.command("explain")
@click.argument("profile")
@_policy_option
@friendly
def policy_explain(profile: str, policy_path: str | None) -> None:
    """Print the routing decision and every derived setting of PROFILE."""
    from taskrouter.explain import render_explain

    derived = _derived(policy_path)
    if profile not in derived.profiles:
        raise TaskrouterError(
            f"no profile {profile!r} in {derived.policy.path}; profiles: "
            + ", ".join(sorted(derived.profiles))
        )
    click.echo(render_explain(derived, profile))


# -- worker, janitor ------------------------------------------------------------------------


@main.command()
@click.option("--app", "app_module", required=True, help="module that defines the @task functions")
@click.option(
    "--backend",
    type=click.Choice(["celery", "rq"]),
    default=None,
    help="celery: Celery's prefork lane; rq: RQ's fork-per-job lane",
)
@click.option(
    "--lane",
    type=click.Choice(["prefork", "fork", "io"]),
    default=None,
    help="io: the I/O lane (thousands of waiting calls in one process)",
)
@click.option("--queues", default=None, help="comma-separated queues (default: all of the lane's)")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100_000),
    default=None,
    help="processes (default: 2 for celery, 1 for rq); calls in flight for the io lane "
    "(default: from the policy's concurrency caps)",
)
@click.option(
    "--events/--no-events",
    default=True,
    show_default=True,
    help="Celery task events, for Flower and `celery events`",
)
@_policy_option
@click.option("-v", "--verbose", is_flag=True)
@friendly
def worker(
    app_module: str,
    backend: str | None,
    lane: str | None,
    queues: str | None,
    concurrency: int | None,
    events: bool,
    policy_path: str | None,
    verbose: bool,
) -> None:
    """Run the workers of one lane for the policy's queues."""
    from .worker import run_worker

    chosen = _lane(backend, lane)
    _logging(verbose)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    sys.exit(
        run_worker(
            app_module, chosen, names, concurrency, events=events, settings=_settings(policy_path)
        )
    )


def _lane(backend: str | None, lane: str | None) -> Any:
    by_backend = {"celery": "prefork", "rq": "fork"}
    if backend and lane and by_backend[backend] != lane and not (backend, lane) == ("celery", "io"):
        raise click.UsageError(f"--backend {backend} and --lane {lane} disagree: give one")
    if not backend and not lane:
        raise click.UsageError("give --backend celery|rq or --lane io")
    return lane or by_backend[backend or ""]


def _settings(policy_path: str | None) -> Settings:
    settings = Settings.from_env()
    return replace(settings, policy_path=policy_path) if policy_path else settings


@main.command()
@click.option("--app", "app_module", default=None, help="module of @task functions (optional)")
@click.option("--once", is_flag=True, help="one pass, print what it did, and exit")
@_policy_option
@friendly
def janitor(app_module: str | None, once: bool, policy_path: str | None) -> None:
    """Retry or fail jobs whose worker died; requeue what dead workers held; sweep."""
    from taskrouter.backends.duties import Duties
    from taskrouter.backends.runtime import Runtime

    from .janitor import run_forever
    from .worker import import_app

    _logging(False)
    if app_module:
        import_app(app_module)
    runtime = Runtime.from_env(_settings(policy_path), engines=())
    runtime.publish_limits()
    duties = Duties(runtime)
    if once:
        click.echo(json.dumps(duties.run_once()))
        return
    run_forever(duties)


# -- status ---------------------------------------------------------------------------------


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="the job as JSON")
@_policy_option
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


# -- demo -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--embedded", is_flag=True, help="use a private embedded server even if Redis answers"
)
@click.option("--jobs", type=click.IntRange(1, 10_000), default=None, help="size of the workload")
@_policy_option
@friendly
def demo(embedded: bool, jobs: int | None, policy_path: str | None) -> None:
    """The README's main job: both engines, a mixed workload, a summary."""
    from .demo import run_demo

    if policy_path:
        os.environ["TASKROUTER_POLICY"] = str(Path(policy_path).resolve())
    sys.exit(run_demo(force_embedded=embedded, size=jobs))


# -- api, jobs ------------------------------------------------------------------------------


def _allowed_host_option(fn: F) -> F:
    return click.option(
        "--allowed-host",
        "allowed_hosts",
        multiple=True,
        metavar="HOST[:PORT]",
        help="without TASKROUTER_API_TOKEN, also answer requests whose Host header is this "
        "(repeatable; a bare name allows any port, '*' any host); by default only the "
        "bound address and localhost, with the port",
    )(fn)


@main.command()
@click.option("--app", "app_module", required=True, help="module that defines the @task functions")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--insecure",
    is_flag=True,
    help="allow binding a non-loopback address without TASKROUTER_API_TOKEN",
)
@click.option(
    "--max-body",
    type=click.IntRange(1),
    default=None,
    metavar="BYTES",
    help="largest request body accepted (default 1 MiB)",
)
@_allowed_host_option
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@_policy_option
@friendly
def api(
    app_module: str,
    host: str,
    port: int,
    insecure: bool,
    max_body: int | None,
    allowed_hosts: tuple[str, ...],
    access_log: bool,
    policy_path: str | None,
) -> None:
    """Serve the HTTP job-status API (OpenAPI docs at /docs)."""
    from .api.limits import DEFAULT_MAX_BODY
    from .api.server import serve

    _logging(False)
    sys.exit(
        serve(
            app_module,
            host=host,
            port=port,
            insecure=insecure,
            max_body_bytes=max_body or DEFAULT_MAX_BODY,
            allowed_hosts=allowed_hosts,
            access_log=access_log,
            settings=_settings(policy_path),
        )
    )


@main.command()
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


@main.command()
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


@main.command()
@click.option("--app", "app_module", required=True, help="module that defines the @task functions")
@click.option("--host", default="127.0.0.1", show_default=True, help="address of the API")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    default=2,
    show_default=True,
    help="processes per engine",
)
@click.option(
    "--embedded", is_flag=True, help="use a private embedded server even if Redis answers"
)
@_allowed_host_option
@_policy_option
@friendly
def up(
    app_module: str,
    host: str,
    port: int,
    concurrency: int,
    embedded: bool,
    allowed_hosts: tuple[str, ...],
    policy_path: str | None,
) -> None:
    """The whole stack on one machine: Redis (embedded when none is configured), a worker
    of each engine with its janitor, and the API; Ctrl-C stops it all."""
    from .up import run_up

    _logging(False)
    sys.exit(
        run_up(
            app_module,
            host=host,
            port=port,
            concurrency=concurrency,
            force_embedded=embedded,
            allowed_hosts=allowed_hosts,
            policy_path=str(Path(policy_path).resolve()) if policy_path else None,
        )
    )


# Commands of their own modules, registered on ``main`` when they are imported.
from . import cli_flow  # noqa: E402, F401

if __name__ == "__main__":
    main()
