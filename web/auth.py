"""Optional HTTP Basic login: required as soon as the users file names anyone, off otherwise.

Every route but ``/api/health`` is behind it (pages, API, thumbnails, files,
``/metrics``, the clip-retrieval routes). Decisions, and why:

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
  the oldest failure is a window old. Requests without credentials (a
  browser's first request) do not count. Behind a reverse proxy every client
  shares the proxy's address; ``X-Forwarded-For`` is not trusted.
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

from flask import Flask, make_response, request
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

    def failed(self, client: str) -> None:
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                times = self._failures[client] = deque(maxlen=self.limit)
                while len(self._failures) > self.max_clients:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(client)
            times.append(self.clock())


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
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        try:
            users = self.users.get()
        except OSError as exc:
            log.error("login: cannot read %s: %s", self.users.path, exc)
            return error_response(503, "the server's users file cannot be read; see the server log")
        if not users.required:
            return None
        client = client_key(request.remote_addr)
        wait = self.limiter.retry_after(client)
        if wait is not None:
            response = make_response(
                error_response(429, f"too many failed logins from your address; try again in {wait} s")
            )
            response.headers["Retry-After"] = str(wait)
            return response
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None:
            return _challenge("login required")
        if self.verify(users, auth.username, auth.password or ""):
            return None
        self.limiter.failed(client)
        return _challenge("wrong user name or password")

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


def _challenge(message: str):
    response = make_response(error_response(401, message))
    response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    return response


def init_app(app: Flask, users_path: Path) -> Guard:
    """Put every route but /api/health behind the users file at ``users_path`` (open while it names nobody)."""
    guard = Guard(UsersFile(users_path))
    app.extensions["glimpse_auth"] = guard
    app.before_request(guard.check)
    return guard
