"""The ``taskrouter`` command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from taskrouter.errors import TaskrouterError
from taskrouter.settings import Settings

from . import cli_read, schedules
from .cli_common import F, friendly, policy_option, settings_for, setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskrouter", prog_name="taskrouter")
def main() -> None:
    """Send each background task to Celery or RQ by its profile; one status API for all."""


# -- policy -------------------------------------------------------------------------------


@main.group()
def policy() -> None:
    """Check and explain policies.yaml."""


def _derived(policy_path: str | None) -> Any:
    from taskrouter.derive import derive
    from taskrouter.policy_file import load_policy

    return derive(load_policy(policy_path or Settings.from_env().policy_path))


@policy.command("check")
@policy_option
@friendly
def policy_check(policy_path: str | None) -> None:
    """Validate the policy; print each profile, its engine and why."""
    from taskrouter.explain import render_check

    from .schedules import render_defined

    derived = _derived(policy_path)
    click.echo(render_check(derived) + render_defined(derived.policy.schedules))


@policy.command("explain")
@click.argument("profile")
@policy_option
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


@policy.command("advise")
@policy_option
@click.option("--json", "as_json", is_flag=True, help="each profile's figures as JSON")
@friendly
def policy_advise(policy_path: str | None, as_json: bool) -> None:
    """Each profile's declared expected_latency against its observed run times (p50,
    p95, count), the engine and lane those would choose, and the policy edit to make."""
    from taskrouter.services import advise

    derived = _derived(policy_path)
    seen = advise.gather(derived, Settings.from_env())
    click.echo(json.dumps(seen, indent=2) if as_json else advise.render(derived, seen))


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
@policy_option
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
    setup_logging(verbose)
    names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    sys.exit(
        run_worker(
            app_module,
            chosen,
            names,
            concurrency,
            events=events,
            settings=settings_for(policy_path),
        )
    )


def _lane(backend: str | None, lane: str | None) -> Any:
    by_backend = {"celery": "prefork", "rq": "fork"}
    if backend and lane and by_backend[backend] != lane and not (backend, lane) == ("celery", "io"):
        raise click.UsageError(f"--backend {backend} and --lane {lane} disagree: give one")
    if not backend and not lane:
        raise click.UsageError("give --backend celery|rq or --lane io")
    return lane or by_backend[backend or ""]


@main.command()
@click.option("--app", "app_module", default=None, help="module of @task functions (optional)")
@click.option("--once", is_flag=True, help="one pass, print what it did, and exit")
@policy_option
@friendly
def janitor(app_module: str | None, once: bool, policy_path: str | None) -> None:
    """Retry or fail jobs whose worker died; requeue what dead workers held; sweep; make
    the jobs of the policy's schedules (those whose task --app registers)."""
    from taskrouter.backends.duties import Duties
    from taskrouter.backends.runtime import Runtime

    from .janitor import run_forever
    from .worker import check_schedules, import_app

    setup_logging(False)
    if app_module:
        import_app(app_module)
    runtime = Runtime.from_env(settings_for(policy_path), engines=())
    if app_module:
        check_schedules(runtime)
    runtime.publish_limits()
    duties = Duties(runtime)
    if once:
        click.echo(json.dumps(duties.run_once()))
        return
    run_forever(duties)


# -- demo -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--embedded", is_flag=True, help="use a private embedded server even if Redis answers"
)
@click.option("--jobs", type=click.IntRange(1, 10_000), default=None, help="size of the workload")
@policy_option
@friendly
def demo(embedded: bool, jobs: int | None, policy_path: str | None) -> None:
    """The README's main job: both engines, a mixed workload, a summary."""
    from .demo import run_demo

    if policy_path:
        os.environ["TASKROUTER_POLICY"] = str(Path(policy_path).resolve())
    sys.exit(run_demo(force_embedded=embedded, size=jobs))


# -- api ------------------------------------------------------------------------------


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
@policy_option
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

    setup_logging(False)
    sys.exit(
        serve(
            app_module,
            host=host,
            port=port,
            insecure=insecure,
            max_body_bytes=max_body or DEFAULT_MAX_BODY,
            allowed_hosts=allowed_hosts,
            access_log=access_log,
            settings=settings_for(policy_path),
        )
    )


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
@policy_option
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

    setup_logging(False)
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


for _command in (cli_read.status, cli_read.jobs, cli_read.workers, schedules.schedules):
    main.add_command(_command)


# Commands of their own modules, registered on ``main`` when they are imported.
from . import cli_flow  # noqa: E402, F401

if __name__ == "__main__":
    main()
