"""Optional login: `glimpse user …` through the real CLI, enforced by a real waitress server."""

from __future__ import annotations

import base64
import http.client
import io
import json
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import draw_image, glimpse_cmd
from web_support import LiveServer, corpus, engine, image_id  # noqa: F401 - corpus, engine: shared module-scoped fixtures

PASSWORD = "correct horse battery staple"
REALM = 'Basic realm="Glimpse"'


def glimpse_in(home: Path, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """The real CLI with text on stdin (for --password-stdin), on the home's own users file."""
    # An empty GLIMPSE_USERS_FILE is unset: the CLI uses $GLIMPSE_HOME/users, whatever the test environment says.
    return glimpse_cmd(*args, home=home, check=check, timeout=120, env={"GLIMPSE_USERS_FILE": ""}, input=stdin)


class Client:
    """Plain HTTP/1.1 to the live server, from a chosen loopback source address."""

    def __init__(self, base_url: str, source: str = "127.0.0.1"):
        parts = urlsplit(base_url)
        self.host, self.port, self.source = parts.hostname, parts.port, source

    def request(
        self,
        method: str,
        path: str,
        user: str | None = None,
        password: str | None = None,
        body: bytes | None = None,
        headers: dict | None = None,
    ):
        headers = dict(headers or {})
        if user is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30, source_address=(self.source, 0))
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


def png_upload() -> tuple[bytes, dict]:
    buf = io.BytesIO()
    draw_image(3, (64, 48)).save(buf, "PNG")
    boundary = "glimpse-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + buf.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture
def cli_home(tmp_path) -> Path:
    """The home the CLI writes its users file to; the shared corpus's home is never touched."""
    return tmp_path / "login-home"


@pytest.fixture
def live(engine, cli_home):
    from web.app import create_app

    app = create_app(
        engine, config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"], "GLIMPSE_USERS_FILE": str(cli_home / "users")}
    )
    server = LiveServer(app, threads=4)
    yield server
    server.close()


def protected_requests(corpus, engine) -> list[tuple[str, str, bytes | None, dict]]:
    iid = image_id(engine, corpus.files["beach_00.png"])
    upload, upload_headers = png_upload()
    knn = json.dumps({"text": "beach", "num_images": 2}).encode()
    return [
        ("GET", "/", None, {}),
        ("GET", "/api/search?q=beach&k=2", None, {}),
        ("POST", "/api/search/image?k=2", upload, upload_headers),
        ("GET", f"/api/images/{iid}", None, {}),
        ("GET", f"/api/images/{iid}/file", None, {}),
        ("GET", f"/api/images/{iid}/thumb", None, {}),
        ("GET", f"/image/{iid}", None, {}),
        ("GET", "/static/style.css", None, {}),
        ("POST", "/knn-service", knn, {"Content-Type": "application/json"}),
        ("GET", "/indices-list", None, {}),
        ("GET", "/metrics", None, {}),
    ]


def test_login_protects_every_route_once_a_user_exists(live, corpus, engine, cli_home):
    client = Client(live.url)
    requests = protected_requests(corpus, engine)
    # No users file: open, as before.
    for method, path, body, headers in requests:
        assert client.request(method, path, body=body, headers=headers)[0] == 200, path

    added = glimpse_in(cli_home, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert "alice" in added.stdout
    users_file = cli_home / "users"
    raw = users_file.read_bytes()
    assert PASSWORD.encode() not in raw and raw.startswith(b"alice:")
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert glimpse_in(cli_home, "user", "list").stdout.split() == ["alice"]

    # The running server now asks for a login everywhere (no restart).
    for method, path, body, headers in requests:
        status, resp_headers, payload = client.request(method, path, body=body, headers=headers)
        assert status == 401, path
        assert resp_headers["WWW-Authenticate"].startswith(REALM), path
        if path.startswith(("/api/", "/knn-service", "/indices-list")):
            assert json.loads(payload) == {"error": "login required"}, path
    status, _, page = client.request("GET", "/")
    assert status == 401 and b"<html" in page.lower() and b"login required" in page
    # Liveness stays open for load balancers and monitors.
    status, _, payload = client.request("GET", "/api/health")
    assert status == 200 and json.loads(payload)["status"] == "ok"

    for method, path, body, headers in requests:
        assert client.request(method, path, "alice", PASSWORD, body=body, headers=headers)[0] == 200, path
    status, resp_headers, payload = client.request("GET", "/api/search?q=beach", "alice", "wrong")
    assert status == 401 and resp_headers["WWW-Authenticate"].startswith(REALM)
    assert "wrong user name or password" in json.loads(payload)["error"]
    assert client.request("GET", "/api/search?q=beach", "mallory", PASSWORD)[0] == 401

    # A new password replaces the old one at once; the old one stops working.
    replaced = glimpse_in(cli_home, "user", "add", "alice", "--password-stdin", stdin="new secret\n")
    assert "replaced" in replaced.stdout
    assert client.request("GET", "/api/search?q=beach", "alice", "new secret")[0] == 200
    assert client.request("GET", "/api/search?q=beach", "alice", PASSWORD)[0] == 401

    missing = glimpse_in(cli_home, "user", "remove", "bob", check=False)
    assert missing.returncode == 1 and "no user named 'bob'" in missing.stderr
    glimpse_in(cli_home, "user", "remove", "alice")
    assert glimpse_in(cli_home, "user", "list").stdout.split() == []
    assert client.request("GET", "/api/search?q=beach")[0] == 200  # open again, same server


def test_user_names_are_validated(cli_home):
    for bad in ("a:b", "tab\there", " padded", ""):
        proc = glimpse_in(cli_home, "user", "add", bad, "--password-stdin", stdin="pw\n", check=False)
        assert proc.returncode == 1 and proc.stderr.startswith("error: "), (bad, proc.stderr)
    empty = glimpse_in(cli_home, "user", "add", "alice", "--password-stdin", stdin="\n", check=False)
    assert empty.returncode == 1 and "password is empty" in empty.stderr
    assert not (cli_home / "users").exists()


def test_failed_logins_are_rate_limited_per_client(live, cli_home):
    glimpse_in(cli_home, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    client = Client(live.url)
    # A browser's first request carries no credentials: refused, but not a failed login.
    for _ in range(12):
        assert client.request("GET", "/api/stats")[0] == 401
    for attempt in range(10):
        assert client.request("GET", "/api/stats", "alice", f"guess {attempt}")[0] == 401
    status, headers, payload = client.request("GET", "/api/stats", "alice", "guess 11")
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert "too many failed logins" in json.loads(payload)["error"]
    # Once limited, this address waits even with the right password …
    assert client.request("GET", "/api/stats", "alice", PASSWORD)[0] == 429
    # … while another client address is served as usual.
    other = Client(live.url, source="127.0.0.2")
    assert other.request("GET", "/api/stats", "alice", PASSWORD)[0] == 200
    assert other.request("GET", "/api/stats", "alice", "wrong")[0] == 401
    assert client.request("GET", "/api/health")[0] == 200


def test_rate_limiter_window_and_memory_bound():
    from web.auth import FailureLimiter, client_key

    now = [1000.0]
    limiter = FailureLimiter(limit=3, window=60, max_clients=2, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a") is None
        limiter.failed("a")
    assert limiter.retry_after("a") == 60
    now[0] += 59.5
    assert limiter.retry_after("a") == 1
    now[0] += 1
    assert limiter.retry_after("a") is None  # the window passed
    limiter.failed("b")
    limiter.failed("c")
    limiter.failed("d")
    assert len(limiter._failures) == 2  # oldest clients dropped, memory stays bounded
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"


def test_serve_warns_before_sharing_photos_without_login(tmp_path):
    from web.server import exposure_warning

    home = tmp_path / "serve-home"
    users_file = home / "users"
    warning = exposure_warning("0.0.0.0", users_file)
    assert "every photo is readable by anyone" in warning and "glimpse user add NAME" in warning
    for loopback in ("127.0.0.1", "localhost", "::1", "[::1]"):
        assert exposure_warning(loopback, users_file) is None

    # The real CLI prints it before anything else; 192.0.2.1 (TEST-NET-1) is not on this machine, so
    # `serve` stops at binding and no server is left behind.
    proc = glimpse_in(home, "serve", "--host", "192.0.2.1", "--port", "5999", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "every photo is readable by anyone" in proc.stderr
    assert proc.stderr.index("every photo is readable") < proc.stderr.index("cannot listen on 192.0.2.1")

    glimpse_in(home, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert exposure_warning("0.0.0.0", users_file) is None
    proc = glimpse_in(home, "serve", "--host", "192.0.2.1", "--port", "5999", check=False)
    assert proc.returncode == 1 and "every photo is readable" not in proc.stderr
