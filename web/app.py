"""Flask app factory: one Engine per app, blueprints for pages, JSON API and clip-retrieval compatibility.

The engine (model, index, store) is built once and shared by every request
thread; ``create_app`` accepts a ready Engine so the server can warm it
before the first request and tests can share one across apps.
"""

from __future__ import annotations

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.http import parse_range_header
from werkzeug.middleware.proxy_fix import ProxyFix

from search.engine import Engine
from search.paths import Paths
from search.settings import Settings, settings
from search.vectors.live import configure_query_threads
from web.config import ENGINE, EXTENSION, max_upload_bytes
from web.errors import HttpError, register_error_handlers
from web.users import users_path

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}
# Pages load only their own script and style; images may come from blob: (the upload preview).
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _engine_settings(engine: Engine) -> Settings:
    """The settings the engine was built with (the process's when it keeps none)."""
    own = getattr(engine, "settings", None)
    if isinstance(own, Settings):
        return own
    return settings() if own is None else Settings(own)


def create_app(paths_or_engine: Paths | Engine, config: dict | None = None) -> Flask:
    """Build the app around an Engine (made from Paths when given Paths).

    The app's settings are the engine's (the environment's, for an engine made here) with ``config``'s
    overrides by name (web.config.app_settings reads them); an unknown name or a bad value is a SettingError.
    Serving queries starts here, so FAISS's process-wide thread count is set here too.
    """
    if isinstance(paths_or_engine, Engine):
        engine = paths_or_engine
        conf = _engine_settings(engine).replace(config)
    else:
        conf = settings().replace(config)
        engine = Engine(paths_or_engine, settings=conf)
    configure_query_threads(conf)
    app = Flask(__name__)
    app.extensions[EXTENSION] = conf
    # Room for a base64 upload in a JSON body; the decoded size is checked against the limit itself.
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes(conf) * 4 // 3 + 64 * 1024
    app.config["JSON_SORT_KEYS"] = False
    if isinstance(app.json, DefaultJSONProvider):  # Flask's own provider, unless replaced
        app.json.sort_keys = False
    app.extensions[ENGINE] = engine

    from web import api, auth, clip_compat, duplicates, metrics, pages

    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(clip_compat.bp)
    app.register_blueprint(duplicates.bp)
    register_error_handlers(app)
    pages.register_filters(app)
    metrics.init_app(app, engine)  # first: its hooks time and count every request, refused ones too

    @app.before_request
    def _check_host():
        # DNS-rebinding guard: a page on another site must not reach a loopback server through its own hostname.
        allowed = conf["GLIMPSE_ALLOWED_HOSTS"]
        if allowed:
            host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
            host = host.strip("[]").lower()
            if host not in {h.strip("[]").lower() for h in allowed}:
                raise HttpError(403, f"host {request.host!r} is not allowed (GLIMPSE_ALLOWED_HOSTS)")

    @app.before_request
    def _check_body_size():
        # On the announced length, on every route, before a view reads any of the body. Under waitress this
        # never fires: it refuses at the same cap itself (web.server.make_server). Bodies without a length
        # are cut at the cap by werkzeug's stream.
        cap = app.config["MAX_CONTENT_LENGTH"]
        if cap is not None and (request.content_length or 0) > cap:
            raise HttpError(413, f"request body too large: the limit is {cap} bytes")

    @app.before_request
    def _ignore_unusable_range():
        # RFC 9110 14.2: a server may ignore Range, an unknown unit it must, and an invalid ranges-specifier
        # ("junk", "bytes=5-1") it may ignore or reject; several ranges would need a multipart answer. All of
        # these get the whole file (200) here, not werkzeug's 416. A valid single range the file cannot satisfy
        # ("bytes=999999-" on a small file) stays a 416 (14.1.1).
        raw = request.environ.get("HTTP_RANGE")
        if raw is not None:
            parsed = parse_range_header(raw)
            if parsed is None or len(parsed.ranges) != 1:
                del request.environ["HTTP_RANGE"]

    auth.init_app(app, users_path(engine.paths.home, conf))

    @app.after_request
    def _headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        return response

    hops = int(conf["GLIMPSE_TRUSTED_PROXIES"] or 0)
    if hops:  # the client and scheme the proxies saw, for the login's rate limit, the logs and metrics
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    return app
