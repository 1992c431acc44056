"""Server settings, read from the environment so a systemd unit or a shell can set them.

Every setting can also be passed to ``create_app(..., config={...})`` under the
same name, which is how tests turn features on without touching os.environ.
"""

from __future__ import annotations

import os

DEFAULTS = {
    # Largest accepted upload (multipart or base64 in JSON), in MiB.
    "GLIMPSE_MAX_UPLOAD_MB": 20.0,
    # Most pixels an uploaded image may have (read from its header, before any decoding).
    "GLIMPSE_MAX_UPLOAD_PIXELS": 50_000_000,
    # clip-retrieval's `image_url`: off by default so the server never fetches from arbitrary hosts.
    "GLIMPSE_ALLOW_IMAGE_URL": False,
    # Host header names accepted (DNS-rebinding guard); None accepts any.
    "GLIMPSE_ALLOWED_HOSTS": None,
    # Origins allowed to call the clip-retrieval endpoints from a browser (its hosted front end); none by default.
    "GLIMPSE_CORS_ORIGINS": (),
    # Logins (web.users); None means $GLIMPSE_HOME/users. The server is open while it names nobody.
    "GLIMPSE_USERS_FILE": None,
}

_TRUE = {"1", "true", "yes", "on"}


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def from_env(environ: dict | None = None) -> dict:
    """Settings from GLIMPSE_* environment variables, defaults for the rest."""
    env = os.environ if environ is None else environ
    out = dict(DEFAULTS)
    if env.get("GLIMPSE_MAX_UPLOAD_MB"):
        out["GLIMPSE_MAX_UPLOAD_MB"] = float(env["GLIMPSE_MAX_UPLOAD_MB"])
    if env.get("GLIMPSE_MAX_UPLOAD_PIXELS"):
        out["GLIMPSE_MAX_UPLOAD_PIXELS"] = int(float(env["GLIMPSE_MAX_UPLOAD_PIXELS"]))
    if env.get("GLIMPSE_ALLOW_IMAGE_URL"):
        out["GLIMPSE_ALLOW_IMAGE_URL"] = env["GLIMPSE_ALLOW_IMAGE_URL"].strip().lower() in _TRUE
    if env.get("GLIMPSE_ALLOWED_HOSTS"):
        out["GLIMPSE_ALLOWED_HOSTS"] = _split(env["GLIMPSE_ALLOWED_HOSTS"])
    if env.get("GLIMPSE_CORS_ORIGINS"):
        out["GLIMPSE_CORS_ORIGINS"] = _split(env["GLIMPSE_CORS_ORIGINS"])
    if env.get("GLIMPSE_USERS_FILE"):
        out["GLIMPSE_USERS_FILE"] = env["GLIMPSE_USERS_FILE"]
    return out


def max_upload_bytes(config) -> int:
    return int(float(config["GLIMPSE_MAX_UPLOAD_MB"]) * 1024 * 1024)
