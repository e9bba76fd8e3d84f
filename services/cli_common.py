"""What every ``taskrouter`` command shares: clear errors, logging, the --policy option."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
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


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def policy_option(fn: F) -> F:
    return click.option(
        "--policy",
        "policy_path",
        default=None,
        metavar="FILE",
        help="policy file (default: $TASKROUTER_POLICY or ./policies.yaml)",
    )(fn)


def settings_for(policy_path: str | None) -> Settings:
    settings = Settings.from_env()
    return replace(settings, policy_path=policy_path) if policy_path else settings
