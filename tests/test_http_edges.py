"""HTTP details an external fuzzer (Schemathesis) and a black-box attack found (issue 24), against real
waitress on 127.0.0.1: boundary dates, blank parameters, keyword scores and the schema, caching behind a
login, Range, waitress's own errors, CORS preflight with a login, health without one, trusted proxies."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from pathlib import Path

import pytest

from web_support import LiveServer, corpus, engine, image_id, server  # noqa: F401 - shared module-scoped fixtures

PASSWORD = "a long enough password"
USER = "alice"


def call(live, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, headers, body bytes) of one request to a LiveServer."""
    host, port = urllib.parse.urlsplit(live.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def basic(user: str = USER, password: str = PASSWORD) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def error_json(result, status: int) -> str:
    got, headers, body = result
    assert got == status, body[:300]
    assert headers["Content-Type"].startswith("application/json"), headers["Content-Type"]
    payload = json.loads(body)
    assert set(payload) == {"error"} and payload["error"]
    return payload["error"]


@pytest.fixture(scope="module")
def users_file(tmp_path_factory) -> Path:
    from web.users import add

    path = tmp_path_factory.mktemp("login") / "users"
    add(path, USER, PASSWORD)
    return path


@pytest.fixture(scope="module")
def guarded(engine, users_file):
    """The app behind a login, with CORS for one origin."""
    from web.app import create_app

    config = {
        "GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"],
        "GLIMPSE_USERS_FILE": str(users_file),
        "GLIMPSE_CORS_ORIGINS": ["https://front.example"],
    }
    live = LiveServer(create_app(engine, config=config), threads=4)
    yield live
    live.close()


@pytest.fixture(scope="module")
def some_id(engine, corpus) -> int:
    return image_id(engine, corpus.files["beach_00.png"])


# ------------------------------------------------------------------ boundary dates
@pytest.mark.parametrize(
    "dates", ["date_from=0001-01-01", "date_to=9999-12-31", "date_from=0001-01-01&date_to=9999-12-31"]
)
def test_the_first_and_last_valid_days_filter_instead_of_500(server, some_id, dates):
    for path in (f"/api/search?q=beach&k=5&{dates}", f"/api/images/{some_id}/similar?k=5&{dates}"):
        status, _, body = call(server, "GET", path)
        assert status == 200, (path, body[:300])
        assert len(json.loads(body)["results"]) == 5, path  # every image lies between those days


def test_cli_search_with_the_first_valid_day_is_no_traceback(corpus):
    from conftest import glimpse_cmd

    proc = glimpse_cmd("search", "beach", "-k", "3", "--date-from", "0001-01-01", "--json", home=corpus.home)
    assert "Traceback" not in proc.stderr and len(json.loads(proc.stdout)) == 3


def test_the_cli_refuses_a_blank_date_and_an_overlong_query_like_the_api(server, corpus):
    from conftest import glimpse_cmd
    from search.query.args import MAX_QUERY_CHARS

    blank = glimpse_cmd("search", "beach", "--date-to", "", home=corpus.home, check=False)
    assert blank.returncode == 2 and "--date-to is empty" in blank.stderr, blank.stderr
    long = "a" * (MAX_QUERY_CHARS + 1)
    proc = glimpse_cmd("search", long, home=corpus.home, check=False)
    assert proc.returncode == 2 and "at most 1000 characters" in proc.stderr, proc.stderr
    assert "at most 1000 characters" in error_json(call(server, "GET", f"/api/search?q={long}"), 400)
    assert call(server, "GET", f"/api/search?q={long[:-1]}&k=1")[0] == 200


# ------------------------------------------------------------------ blank values are 400s, not defaults
@pytest.mark.parametrize("name", ["k", "page", "order", "mode", "min_score", "date_from", "date_to", "folder"])
def test_a_blank_search_parameter_is_refused(server, some_id, name):
    for path in (f"/api/search?q=beach&{name}=", f"/api/images/{some_id}/similar?{name}=%20"):
        assert name in error_json(call(server, "GET", path), 400), path


def test_other_blank_parameters_are_refused(server, some_id):
    assert "size" in error_json(call(server, "GET", f"/api/images/{some_id}/thumb?size="), 400)
    assert "threshold" in error_json(call(server, "GET", "/api/duplicates?threshold="), 400)
    # The page's form sends its empty fields: there a blank field still means "no filter".
    status, _, _ = call(server, "GET", "/?q=beach&k=&date_from=&date_to=&min_score=&order=&mode=&folder=")
    assert status == 200


# ------------------------------------------------------------------ keyword scores and the schema
def test_keyword_results_have_null_scores_and_the_schema_says_so(server):
    import jsonschema

    status, _, body = call(server, "GET", "/api/search?q=beach&mode=keywords&k=5")
    page = json.loads(body)
    assert status == 200 and page["results"] and all(r["score"] is None for r in page["results"])
    _, _, doc = call(server, "GET", "/api/openapi.json")
    document = json.loads(doc)
    schema = {**document["components"]["schemas"]["SearchResponse"], "components": document["components"]}
    jsonschema.validate(page, schema)


# ------------------------------------------------------------------ caching behind a login
def test_images_are_private_behind_a_login_and_public_without(server, guarded, some_id):
    for route in ("file", "thumb"):
        path = f"/api/images/{some_id}/{route}"
        status, headers, _ = call(server, "GET", path)
        assert status == 200 and headers["Cache-Control"].startswith("public"), route
        status, headers, _ = call(guarded, "GET", path, basic())
        cache = headers["Cache-Control"]
        assert status == 200 and "private" in cache and "public" not in cache, (route, cache)
        assert "max-age" in cache and "Authorization" in headers["Vary"], (route, headers["Vary"])


# ------------------------------------------------------------------ Range
@pytest.mark.parametrize("value", ["junk", "bytes=5-1", "bytes=0-1,4-6", "bytes=0-1, 3-"])
def test_an_unusable_range_is_ignored(server, some_id, value):
    path = f"/api/images/{some_id}/file"
    full = call(server, "GET", path)[2]
    status, headers, body = call(server, "GET", path, {"Range": value})
    assert status == 200 and body == full and "Content-Range" not in headers, value


def test_a_valid_range_is_served_or_unsatisfiable(server, some_id):
    path = f"/api/images/{some_id}/file"
    full = call(server, "GET", path)[2]
    status, headers, body = call(server, "GET", path, {"Range": "bytes=2-5"})
    assert status == 206 and body == full[2:6] and headers["Content-Range"] == f"bytes 2-5/{len(full)}"
    status, _, _ = call(server, "GET", path, {"Range": f"bytes={len(full) + 10}-"})
    assert status == 416


# ------------------------------------------------------------------ waitress's own refusals
def raw(live, data: bytes) -> tuple[int, dict, bytes]:
    host, port = urllib.parse.urlsplit(live.url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(data)
        got = b""
        while part := sock.recv(65536):
            got += part
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 314572800\r\n\r\nxx", 413),
        (b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: nope\r\n\r\n", 400),
        (b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400),
    ],
)
def test_waitress_errors_are_json_like_the_apps(server, request_bytes, status):
    got, headers, body = raw(server, request_bytes)
    assert got == status and headers["content-type"] == "application/json", (got, headers, body)
    assert set(json.loads(body)) == {"error"}


# ------------------------------------------------------------------ CORS preflight and health, with a login
def test_cors_preflight_needs_no_login_but_the_request_does(guarded):
    preflight = {
        "Origin": "https://front.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    status, headers, _ = call(guarded, "OPTIONS", "/knn-service", preflight)
    assert status in (200, 204)
    assert headers["Access-Control-Allow-Origin"] == "https://front.example"
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()
    body = json.dumps({"text": "beach", "num_images": 2}).encode()
    json_headers = {"Origin": "https://front.example", "Content-Type": "application/json"}
    assert call(guarded, "POST", "/knn-service", json_headers, body)[0] == 401
    assert call(guarded, "POST", "/knn-service", {**json_headers, **basic()}, body)[0] == 200
    # An OPTIONS that is no preflight is as guarded as any request.
    assert call(guarded, "OPTIONS", "/knn-service")[0] == 401


def test_health_says_only_ok_without_a_login(guarded, server):
    status, _, body = call(guarded, "GET", "/api/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = call(guarded, "GET", "/api/health", basic())
    assert status == 200 and "images_indexed" in json.loads(body)
    assert call(guarded, "GET", "/api/health", basic(password="wrong"))[0] == 401
    status, _, body = call(server, "GET", "/api/health")  # no login configured: everything, as before
    assert status == 200 and json.loads(body)["images_indexed"] > 0


# ------------------------------------------------------------------ trusted proxies
def test_trusted_proxies_give_each_client_its_own_rate_limit(engine, tmp_path):
    """Behind one trusted proxy, ten wrong guesses from one client block that client, not the next one;
    without the setting the forwarded address is ignored and the proxy's own address is blocked."""
    from web.app import create_app
    from web.users import add

    users = tmp_path / "users"
    add(users, USER, PASSWORD)
    for hops, other_blocked in ((1, False), (0, True)):
        config = {"GLIMPSE_USERS_FILE": str(users), "GLIMPSE_TRUSTED_PROXIES": hops, "GLIMPSE_ALLOWED_HOSTS": None}
        live = LiveServer(create_app(engine, config=config), threads=2)
        try:
            for _ in range(10):
                wrong = {**basic(password="wrong"), "X-Forwarded-For": "203.0.113.7"}
                assert call(live, "GET", "/api/stats", wrong)[0] == 401
            assert call(live, "GET", "/api/stats", {**basic(), "X-Forwarded-For": "203.0.113.7"})[0] == 429
            other = call(live, "GET", "/api/stats", {**basic(), "X-Forwarded-For": "198.51.100.9"})[0]
            assert other == (429 if other_blocked else 200), hops
        finally:
            live.close()


# ------------------------------------------------------------------ the login's rate limit under concurrency
def test_concurrent_wrong_guesses_get_exactly_the_limit_of_401s(engine, users_file):
    """30 wrong guesses at once from one address: 10 are checked (401), the other 20 are 429. Counting a
    failure only after its slow password check let 17 of 30 through."""
    from concurrent.futures import ThreadPoolExecutor

    from web.app import create_app
    from web.auth import FAILURES_PER_WINDOW

    live = LiveServer(create_app(engine, config={"GLIMPSE_USERS_FILE": str(users_file)}), threads=16)
    try:
        with ThreadPoolExecutor(30) as pool:
            statuses = list(
                pool.map(lambda i: call(live, "GET", "/api/stats", basic(password=f"guess {i}"))[0], range(30))
            )
        assert sorted(statuses) == [401] * FAILURES_PER_WINDOW + [429] * (30 - FAILURES_PER_WINDOW)
    finally:
        live.close()


# ------------------------------------------------------------------ `glimpse serve` options
@pytest.mark.parametrize(
    "args", [["--port", "99999"], ["--port", "65536"], ["--port", "-1"], ["--host", "256.1.1.1"], ["--threads", "0"]]
)
def test_bad_serve_options_are_usage_errors(tmp_path, args):
    """Each is exit 2 with one line naming the option, before anything is loaded or bound (it was a traceback,
    a silently wrapped or random port, or a server whose zero threads hung every request)."""
    from conftest import glimpse_cmd

    proc = glimpse_cmd("serve", *args, home=tmp_path / "home", check=False, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and args[0] in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "serving" not in proc.stdout


def test_serve_hosts_are_checked_without_the_network():
    import click

    from glimpse.serve_options import HOST

    assert HOST.convert("[::1]", None, None) == "::1"
    for good in ("127.0.0.1", "0.0.0.0", "::", "localhost", "photos.lan", "my-host.example.org."):
        assert HOST.convert(good, None, None) in (good, "::")
    for bad in ("256.1.1.1", "1.2.3", "-bad.example", "a..b", "", "host name", "x" * 64 + ".lan", ":::"):
        with pytest.raises(click.BadParameter):
            HOST.convert(bad, None, None)
