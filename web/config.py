"""What every route reads from its app: the Engine and the app's settings, both set by ``create_app``.

One :class:`search.settings.Settings` per app, read when the app is built; ``create_app(..., config={...})``
overrides settings by name for that app alone (how tests turn features on without touching os.environ).
Nothing is copied into Flask's ``app.config``.
"""

from __future__ import annotations

from flask import Flask, current_app

from search.engine import Engine
from search.settings import Settings

EXTENSION = "glimpse_settings"
ENGINE = "glimpse_engine"


def engine() -> Engine:
    """The Engine of the app serving this request."""
    return current_app.extensions[ENGINE]


def app_settings(app: Flask | None = None) -> Settings:
    """The settings of ``app`` (default: the app serving this request)."""
    return (app or current_app).extensions[EXTENSION]


def max_upload_bytes(conf: Settings) -> int:
    return int(float(conf["GLIMPSE_MAX_UPLOAD_MB"]) * 1024 * 1024)
