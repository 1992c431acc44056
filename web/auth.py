"""Optional HTTP Basic login: required as soon as the users file names anyone, off otherwise.

Every route but ``/api/health`` is behind it (pages, API, thumbnails, files,
``/metrics``, the clip-retrieval routes); health then says only ``{"status": …}``
to a request without a login, and a browser's CORS preflight (``OPTIONS`` with
``Access-Control-Request-Method``, which never carries credentials and reads
nothing) is answered without one. Decisions, and why:

- Passwords are checked with werkzeug's ``check_password_hash`` (constant-time
  compare); an unknown name is checked against a dummy hash of the same kind,
  so the answer's timing does not tell which names exist.
- scrypt takes ~0.1 s and 32 MiB per check, and a browser sends the
  credentials with every thumbnail, so a verified (name, password) pair is
  remembered as an HMAC under a per-process random key, for as long as that
  user's stored hash is unchanged. Only failures pay for a full check.
- Failed logins are limited per client address (an IPv6 client by its /64):
  after ``FAILURES_PER_WINDOW`` failures within ``WINDOW_SECONDS`` that address
  gets 429 with ``Retry-After`` for everything, right password included, until
  the oldest failure is a window old. Each attempt is counted before its
  password is checked, under the limiter's lock, and taken back when it was
  right, so concurrent guesses cannot all slip under the limit. Requests
  without credentials (a browser's first request) do not count. Behind a
  reverse proxy every client shares the proxy's address unless
  GLIMPSE_TRUSTED_PROXIES says how many proxies' ``X-Forwarded-For`` to trust
  (web.app: werkzeug's ProxyFix).
- Behind a login every cacheable answer is ``private`` with ``Vary:
  Authorization`` (:func:`private_behind_login`), so no shared cache keeps a photo.
- The users file is stat'ed per request and re-read only when it changed, so
  ``glimpse user add`` applies to a running server. A file that exists but
  cannot be read makes the server answer 503 instead of opening up.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from flask import Flask, current_app, g, make_response, request
from werkzeug.security import check_password_hash, generate_password_hash

from web import users as users_file
from web.errors import error_response

log = logging.getLogger(__name__)

REALM = "Glimpse"
OPEN_ENDPOINTS = frozenset({"api.health"})
FAILURES_PER_WINDOW = 10
WINDOW_SECONDS = 60.0
MAX_TRACKED_CLIENTS = 10_000
VERIFIED_CACHE_SIZE = 1024


class UsersFile:
    """The users file as last read; re-read when its inode, size or mtime changes (one stat per call)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature: object = object()  # matches nothing: the first call reads
        self._users = users_file.Users()

    def get(self) -> users_file.Users:
        """Current users; raises OSError when the file exists but cannot be read (callers fail closed)."""
        try:
            st = os.stat(self.path)
            signature, mode = (st.st_ino, st.st_size, st.st_mtime_ns), st.st_mode
        except FileNotFoundError:
            signature, mode = None, 0
        if signature != self._signature:
            with self._lock:
                if signature != self._signature:
                    self._users = users_file.load(self.path) if signature else users_file.Users()
                    self._signature = signature
                    self._log_loaded(mode)
        return self._users

    def _log_loaded(self, mode: int) -> None:
        users = self._users
        log.info(
            "login: %d user(s) in %s%s",
            len(users.hashes),
            self.path,
            "" if users.required else " (none: the server is open)",
        )
        if users.skipped:
            log.warning("login: %d line(s) of %s are not 'name:hash' and grant no login", users.skipped, self.path)
        if users.required and mode & 0o077:
            log.warning("login: %s is readable by other users (mode %o); chmod 600 it", self.path, mode & 0o777)


def client_key(addr: str | None) -> str:
    """Rate-limit key: the IPv4 address, or the /64 an IPv6 client can freely pick addresses from."""
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return addr or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class FailureLimiter:
    """Failed logins per client in a sliding window; thread-safe, at most ``max_clients`` tracked (LRU)."""

    def __init__(
        self,
        limit: int = FAILURES_PER_WINDOW,
        window: float = WINDOW_SECONDS,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit, self.window, self.max_clients, self.clock = limit, window, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it is not blocked."""
        with self._lock:
            return self._wait(client)

    def attempt(self, client: str) -> tuple[int | None, float | None]:
        """Count a login attempt before its password is checked, in one step with the check of the limit:
        ``(wait, None)`` when ``client`` is blocked, else ``(None, stamp)``; give ``stamp`` back to
        :meth:`succeeded` when the password was right. Counting after the check let 30 concurrent wrong
        guesses all pass the limit of 10 while their (slow) scrypt checks ran."""
        with self._lock:
            wait = self._wait(client)
            if wait is not None:
                return wait, None
            return None, self._add(client)

    def succeeded(self, client: str, stamp: float) -> None:
        """Take back the attempt :meth:`attempt` counted: the password was right."""
        with self._lock:
            times = self._failures.get(client)
            if times is not None and stamp in times:
                times.remove(stamp)

    def failed(self, client: str) -> None:
        with self._lock:
            self._add(client)

    def _wait(self, client: str) -> int | None:  # under the lock
        times = self._failures.get(client)
        if times is None:
            return None
        now = self.clock()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(self.window - (now - times[0])))

    def _add(self, client: str) -> float:  # under the lock
        times = self._failures.get(client)
        if times is None:
            times = self._failures[client] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
        stamp = self.clock()
        times.append(stamp)
        return stamp


class Guard:
    """The before_request hook: decide whether this request may go on."""

    def __init__(self, users: UsersFile, limiter: FailureLimiter | None = None):
        self.users = users
        self.limiter = limiter or FailureLimiter()
        self._key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, str] = OrderedDict()  # credentials' HMAC -> the hash they matched
        self._dummies: dict[str, str] = {}
        self._lock = threading.Lock()

    def check(self):
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if preflight:  # a browser's CORS preflight never carries credentials; it reads no data either
            return None
        open_endpoint = request.endpoint in OPEN_ENDPOINTS
        if open_endpoint and request.authorization is None:
            return None  # the route shows less to whom it does not know (logged_in)
        try:
            users = self.users.get()
        except OSError as exc:
            log.error("login: cannot read %s: %s", self.users.path, exc)
            return error_response(503, "the server's users file cannot be read; see the server log")
        if not users.required:
            return None
        client = client_key(request.remote_addr)
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None:
            wait = self.limiter.retry_after(client)
            return _too_many(wait) if wait is not None else _challenge("login required")
        wait, stamp = self.limiter.attempt(client)
        if stamp is None:
            return _too_many(wait or 1)
        if self.verify(users, auth.username, auth.password or ""):
            self.limiter.succeeded(client, stamp)
            g.glimpse_user = auth.username
            return None
        return _challenge("wrong user name or password")

    def logged_in(self) -> bool:
        """Whether this request may see everything: no login is configured, or it gave a right one."""
        if "glimpse_user" in g:
            return True
        try:
            return not self.users.get().required
        except OSError:
            return False

    def verify(self, users: users_file.Users, name: str, password: str) -> bool:
        stored = users.hashes.get(name)
        digest = hmac.new(self._key, f"{len(name)}:{name}:{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if stored is not None and self._verified.get(digest) == stored:
                self._verified.move_to_end(digest)
                return True
        # Unknown name: the same work against a dummy hash, so timing does not reveal which names exist.
        against = stored if stored is not None else self._dummy(next(iter(users.hashes.values()), ""))
        try:
            ok = check_password_hash(against, password) and stored is not None
        except ValueError:  # a hand-edited hash werkzeug cannot read
            log.warning("login: the stored hash of %r is not a werkzeug hash", name)
            ok = False
        if ok and stored is not None:  # ok implies a stored hash
            with self._lock:
                self._verified[digest] = stored
                while len(self._verified) > VERIFIED_CACHE_SIZE:
                    self._verified.popitem(last=False)
        return ok

    def _dummy(self, like: str) -> str:
        """A hash of a random password, made with the same method and cost as ``like``."""
        method = like.split("$", 1)[0]
        if method not in self._dummies:
            try:
                dummy = generate_password_hash(secrets.token_hex(16), method=method)
            except (ValueError, TypeError):
                dummy = generate_password_hash(secrets.token_hex(16))
            self._dummies[method] = dummy
        return self._dummies[method]


def _too_many(wait: int):
    response = make_response(error_response(429, f"too many failed logins from your address; try again in {wait} s"))
    response.headers["Retry-After"] = str(wait)
    return response


def _challenge(message: str):
    response = make_response(error_response(401, message))
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response


def init_app(app: Flask, users_path: Path) -> Guard:
    """Put every route but /api/health behind the users file at ``users_path`` (open while it names nobody)."""
    guard = Guard(UsersFile(users_path))
    app.extensions["glimpse_auth"] = guard
    app.before_request(guard.check)
    app.after_request(private_behind_login)
    return guard


def logged_in() -> bool:
    """For open routes (/api/health): whether to show this request what only users may see."""
    return current_app.extensions["glimpse_auth"].logged_in()


def private_behind_login(response):
    """Behind a login, nothing may sit in a shared cache (a CDN or caching proxy would hand one user's photos
    to anyone): ``public`` becomes ``private``, and ``Vary: Authorization`` tells every cache the answer
    depends on who asked. Without a login the routes' own (public) caching stands."""
    try:
        required = current_app.extensions["glimpse_auth"].users.get().required
    except OSError:
        required = True
    if required:
        cc = response.cache_control
        if cc.public or cc.max_age is not None:
            cc.public = False
            cc.private = True
        response.vary.add("Authorization")
    return response
