"""The server's settings: a view over search.settings (where each is declared, with its help).

Every one can also be passed to ``create_app(..., config={...})`` under the
same name, which is how tests turn features on without touching os.environ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search import settings as registry

# The settings the Flask app carries in app.config.
SERVER_SETTINGS = (
    "GLIMPSE_MAX_UPLOAD_MB",
    "GLIMPSE_MAX_UPLOAD_PIXELS",
    "GLIMPSE_ALLOW_IMAGE_URL",
    "GLIMPSE_ALLOWED_HOSTS",
    "GLIMPSE_CORS_ORIGINS",
    "GLIMPSE_USERS_FILE",
    "GLIMPSE_TRUSTED_PROXIES",
)


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The server settings from GLIMPSE_* environment variables, defaults for the rest.

    Without ``environ``: this process's settings (read once); SettingError for a bad value.
    """
    values = registry.settings() if environ is None else registry.from_env(environ)
    return {name: values[name] for name in SERVER_SETTINGS}


def max_upload_bytes(config) -> int:
    return int(float(config["GLIMPSE_MAX_UPLOAD_MB"]) * 1024 * 1024)
