"""A wheel built from the repository, installed in a fresh venv beside a user project
that has its own ``services/`` package and ``router.py``: workers of both engines start
from the project's directory and run its jobs (CONTRACT: one import package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskrouter.services.processes import stop_all
from tests.conftest import delete_prefix
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration
PIP = [sys.executable, "-m", "pip"]

PROJECT = {
    "services/__init__.py": 'KIND = "the project own services package"\n',
    "router.py": "NAME = 'project-router'\n",
    "tasks.py": """
        import router
        import services
        from taskrouter import task


        @task(profile="quick", name="project.hello")
        def hello(who):
            return f"{router.NAME} greets {who} ({services.__name__})"


        @task(profile="slow", name="project.slow_hello")
        def slow_hello(who):
            return f"{router.NAME} greets {who} ({services.__name__})"
    """,
    "policies.yaml": """
        version: 1
        profiles:
          quick:
            expected_latency: 100ms
          slow:
            expected_latency: 2m
    """,
    "enqueue.py": """
        import tasks

        for fn in (tasks.hello, tasks.slow_hello):
            job = fn.enqueue("you")
            print(job.backend, job.wait(60))
    """,
}


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv with only the built wheel (and its dependencies) installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy of the tracked files: the build writes beside them
    files = _run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    dist = tmp / "dist"
    _run([*PIP, "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("taskrouter-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/", 1)[0] for name in zf.namelist()}
    assert tops == {"taskrouter", wheel.name.split("-py")[0] + ".dist-info"}, tops
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    constraints = ROOT / "constraints.txt"
    _run([*PIP, "--python", str(python), "install", "--quiet", "-c", str(constraints), str(wheel)])
    yield venv


def test_the_wheel_runs_a_user_projects_jobs_on_both_engines(fresh_venv, tmp_path, redis_url):
    project = tmp_path / "project"
    for name, text in PROJECT.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    prefix = f"trw-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKROUTER_", "RQ_"))}
    env.pop("PYTHONPATH", None)  # only what the venv installed, and the project
    env.update(TASKROUTER_REDIS_URL=redis_url, TASKROUTER_KEY_PREFIX=prefix)
    bin_dir = fresh_venv / "bin"
    # Nothing of the checkout is importable from the fresh venv.
    where = _run(
        [str(bin_dir / "python"), "-c", "import taskrouter; print(taskrouter.__file__)"],
        cwd=project,
        env=env,
    ).stdout
    assert str(fresh_venv) in where and str(ROOT) not in where
    procs = []
    try:
        for engine in ("celery", "rq"):
            log = open(tmp_path / f"{engine}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [str(bin_dir / "taskrouter"), "worker", "--app", "tasks", "--backend", engine],
                    cwd=project,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        done = subprocess.run(
            [str(bin_dir / "python"), "enqueue.py"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        logs = "\n".join((tmp_path / f"{e}.log").read_text()[-2000:] for e in ("celery", "rq"))
        assert done.returncode == 0, done.stdout + done.stderr + logs
        assert done.stdout.splitlines() == [
            "celery project-router greets you (services)",
            "rq project-router greets you (services)",
        ], done.stdout + logs
        assert all(p.poll() is None for p in procs), logs
    finally:
        stop_all(procs)
        delete_prefix(redis_url, prefix)
