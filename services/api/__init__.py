"""The job-status service: one HTTP API over every job of both engines.

Build it with ``create_app(settings)``; run it with ``taskrouter api --app MODULE``.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
