"""``taskrouter pause PROFILE`` and ``taskrouter resume PROFILE``: hold and release every
new start of a profile by hand, on every worker of both engines (flow control)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .cli import main
from .cli_common import friendly, policy_option, settings_for

if TYPE_CHECKING:
    from taskrouter.backends.runtime import Runtime


def _runtime(policy_path: str | None, profile: str) -> Runtime:
    from taskrouter.backends.runtime import Runtime

    runtime = Runtime.from_env(settings_for(policy_path), engines=())
    runtime.derived.policy.profile(profile)  # KeyError naming the known profiles
    return runtime


@main.command()
@click.argument("profile")
@policy_option
@friendly
def pause(profile: str, policy_path: str | None) -> None:
    """Hold every new start of PROFILE until `taskrouter resume PROFILE`: its jobs wait
    `scheduled` (record field waiting: paused), holding no worker slot; running jobs
    finish."""
    try:
        runtime = _runtime(policy_path, profile)
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    runtime.store.pause(profile)
    click.echo(f"profile {profile} paused: new starts wait until `taskrouter resume {profile}`")


@main.command()
@click.argument("profile")
@policy_option
@friendly
def resume(profile: str, policy_path: str | None) -> None:
    """End a pause of PROFILE (by hand, or after a RetryAfter with pause: profile); its
    waiting jobs start again within 2 s."""
    try:
        runtime = _runtime(policy_path, profile)
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    was = runtime.store.resume(profile)
    click.echo(f"profile {profile} resumed" if was else f"profile {profile} was not paused")
