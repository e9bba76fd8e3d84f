"""The Celery app for Celery's own tools, built from the environment as workers build it:

    celery -A taskrouter.services.celery_tools inspect registered
    celery -A taskrouter.services.celery_tools inspect active
    celery -A taskrouter.services.celery_tools events
    celery -A taskrouter.services.celery_tools flower      # pip install flower

It reads ``TASKROUTER_REDIS_URL``, ``TASKROUTER_CELERY_BROKER_URL``,
``TASKROUTER_KEY_PREFIX`` and ``TASKROUTER_POLICY`` (Settings.from_env), so it talks to
the same broker, under the same key prefix, as the workers. It only connects: tasks run
on taskrouter workers, which show each one under its own name.
"""

from __future__ import annotations

from taskrouter.backends.celery_app import make_app
from taskrouter.derive import derive
from taskrouter.policy_file import load_policy
from taskrouter.settings import Settings

settings = Settings.from_env()
app = make_app(settings, derive(load_policy(settings.policy_path)))
