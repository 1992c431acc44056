"""`glimpse serve`: the app under waitress, the model loaded before the first request.

Bound to 127.0.0.1 by default; on a loopback address the Host header is
checked too (DNS-rebinding guard), since a browser on the same machine can be
pointed at the server by any web page.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from pathlib import Path

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from search.engine import Engine, EngineError, NotIndexedError
from search.paths import Paths
from search.settings import Settings, settings
from search.vectors.live import IndexUnreadable, configure_query_threads
from web import users
from web.app import create_app
from web.config import app_settings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, conf: Settings | None = None) -> list[str] | None:
    """Host names to accept: GLIMPSE_ALLOWED_HOSTS, else loopback names when bound to loopback, else any."""
    configured = (settings() if conf is None else conf)["GLIMPSE_ALLOWED_HOSTS"]
    if configured:
        return list(configured)
    return LOOPBACK_NAMES + ([host] if host not in LOOPBACK_NAMES else []) if is_loopback(host) else None


def exposure_warning(host: str, users_file: Path) -> str | None:
    """What `glimpse serve` must say when it would share every photo with whoever reaches ``host``."""
    if is_loopback(host):
        return None
    try:
        if users.load(users_file).required:
            return None
    except OSError:
        return None  # unreadable: the server fails closed (503), nothing is shared
    return (
        f"{host} is not a loopback address and no login is configured: every photo is readable by anyone "
        f"who can reach this address; add a login with `glimpse user add NAME`"
    )


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (413 over the body cap, 400 for a malformed request, 431, 501) as the app's
    documented ``{"error": …}`` JSON; waitress writes them as text/plain without ever calling the app."""

    def execute(self):
        error = self.request.error
        message = f"{error.reason.lower()}: {error.body}"
        if error.code == 413:
            message = f"request body too large: {error.body}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def make_server(app, host: str = "127.0.0.1", port: int = 5000, threads: int = 8):
    """A waitress server bound now (port 0 picks a free port); call ``.run()`` to serve.

    waitress reads a whole body (into a temporary file when large) before the app runs, so the app's body
    cap is waitress's too: a longer Content-Length, or a chunked body growing past it, gets a 413 from
    waitress at once. waitress refuses a body of ``max_request_body_size`` bytes or more, the app one of
    more than MAX_CONTENT_LENGTH, hence the + 1. Those refusals are JSON like the app's (JsonErrorTask).
    """
    from waitress import create_server

    cap = app.config.get("MAX_CONTENT_LENGTH")
    limits = {"max_request_body_size": cap + 1} if cap is not None else {}
    if app_settings(app)["GLIMPSE_TRUSTED_PROXIES"]:
        # The app's ProxyFix (web.app) reads X-Forwarded-*; waitress would strip them first.
        limits["clear_untrusted_proxy_headers"] = False
    sockets: dict = {}
    try:
        server = create_server(app, map=sockets, host=host, port=port, threads=threads, ident="Glimpse", **limits)
    except OSError as exc:
        raise EngineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    for listener in {server, *sockets.values()}:  # one per address "localhost" resolves to
        if hasattr(listener, "channel_class"):
            listener.channel_class = JsonErrorChannel
    return server


def server_url(server) -> str:
    host = str(server.effective_host)
    return f"http://[{host}]:{server.effective_port}/" if ":" in host else f"http://{host}:{server.effective_port}/"


def serve(paths: Paths, host: str = "127.0.0.1", port: int = 5000, threads: int = 8) -> None:
    """Build the engine, warm it, print the URL, serve until interrupted. The settings are read once, here."""
    conf = settings()
    warning = exposure_warning(host, users.users_path(paths.home, conf))
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    configure_query_threads(conf)  # before warm(): its queries run under the serving thread count
    engine = Engine(paths, settings=conf)
    try:
        engine.warm()
    except (NotIndexedError, IndexUnreadable) as exc:
        log.warning("%s; the page will say so until an index is published", exc)
    app = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": allowed_hosts(host, conf)})
    server = make_server(app, host, port, threads)
    print(f"Glimpse is serving on {server_url(server)}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        engine.close()
