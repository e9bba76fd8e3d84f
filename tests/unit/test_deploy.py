"""Every command in deploy/ is one the CLI accepts, with an app module that imports: a
renamed option or module would otherwise surface only in someone's cluster."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import click
import pytest
import yaml

from taskrouter.services.cli import main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _procfile() -> list[list[str]]:
    commands = []
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _, command = line.split(":", 1)
            commands.append(shlex.split(command.replace("${PORT:-8000}", "8000")))
    return commands


def _compose() -> list[list[str]]:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    return [s["command"] for s in services.values() if s.get("command", [""])[0] == "taskrouter"]


def _k8s() -> list[list[str]]:
    commands = []
    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "taskrouter.yaml").read_text()):
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                commands.append([str(a) for a in container["args"]])
    return commands


COMMANDS = _procfile() + _compose() + _k8s()


def test_every_deploy_file_runs_each_lane_a_janitor_and_the_api() -> None:
    for commands in (_procfile(), _compose(), _k8s()):
        shown = {" ".join(c) for c in commands}
        assert any("--backend celery" in c for c in shown)
        assert any("--backend rq" in c for c in shown)
        assert any("--lane io" in c for c in shown)
        assert any(c.startswith("taskrouter janitor") for c in shown)
        assert any(c.startswith("taskrouter api") for c in shown)


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[1:3]) for c in COMMANDS])
def test_the_cli_accepts_it(command: list[str]) -> None:
    assert command[0] == "taskrouter"
    name, *args = command[1:]
    sub = main.commands[name]
    with click.Context(main) as parent:
        context = sub.make_context(name, list(args), parent=parent)  # raises on a bad option
    app = context.params.get("app_module")
    if app:  # installed under taskrouter: the image has no checkout on its path
        assert app.startswith("taskrouter."), app
        importlib.import_module(app)
