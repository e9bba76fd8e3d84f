"""``taskrouter api``: check the setup, then serve the app with uvicorn."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

from taskrouter.derive import derive
from taskrouter.errors import TaskrouterError
from taskrouter.policy_file import load_policy
from taskrouter.registry import registered
from taskrouter.schedule_file import check_tasks
from taskrouter.settings import Settings

from .auth import check_bind, default_allowed_hosts, is_loopback

log = logging.getLogger("taskrouter.api")


def serve(
    app_module: str,
    *,
    host: str,
    port: int,
    insecure: bool = False,
    max_body_bytes: int,
    allowed_hosts: Sequence[str] = (),
    access_log: bool = True,
    settings: Settings | None = None,
) -> int:
    """Serve the API until SIGINT/SIGTERM; every setup error is a TaskrouterError."""
    import uvicorn

    from taskrouter.services.worker import import_app

    from .app import create_app

    settings = settings or Settings.from_env()
    check_bind(host, settings.api_token, insecure)
    import_app(app_module)
    # The policy and the tasks' profiles are checked here, before binding, so that a
    # mistake is one clear message rather than a failed startup deep in uvicorn.
    derived = derive(load_policy(settings.policy_path))
    missing = sorted(
        f"{t.name} (profile {t.profile!r})"
        for t in registered().values()
        if t.profile not in derived.profiles
    )
    if missing:
        raise TaskrouterError(
            f"tasks use profiles that {derived.policy.path} does not define: " + ", ".join(missing)
        )
    check_tasks(derived.policy.schedules, derived.policy.path, registered())
    if not is_loopback(host) and not settings.api_token:
        log.warning(
            "serving %s without a token (--insecure): anyone who reaches it is trusted", host
        )
    app = create_app(
        settings,
        max_body_bytes=max_body_bytes,
        allowed_hosts=[*default_allowed_hosts(host, port), *allowed_hosts],
    )
    # What is alive now (modules, the app) lives as long as the process: keep it out of
    # the collector's full passes, which then pause requests for less time.
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
        server_header=False,
        # Behind a proxy, uvicorn's defaults would trust X-Forwarded-* from 127.0.0.1.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
