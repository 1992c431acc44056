"""Hostile requests against a real waitress server: each is a 4xx with a JSON error, never a 500.

Before the fix most of these were 500s; the rest were a body waited for to the
end before its 413, a folder filter taken relative to the server's directory, a
NaN query vector, or a vaguer message. After each test the server must still
answer /api/health, and nothing may have been logged with a traceback (only an
unexpected exception is).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import urllib.parse

import pytest

from web_support import LiveServer, corpus, engine, image_id, server  # noqa: F401 - corpus, engine, server: shared module-scoped fixtures

BIG_IDS = [2**63, 2**64 + 5, 10**30]
HUGE = "9" * 400


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, content type, body bytes) of one request; the path is sent as given (raw bytes allowed)."""
    host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    finally:
        conn.close()


def error_of(result, status: int) -> str:
    """The message of a ``{"error": …}`` answer with this status."""
    got, ctype, body = result
    assert got == status, body[:500]
    assert ctype.startswith("application/json"), ctype
    payload = json.loads(body)
    assert set(payload) == {"error"} and isinstance(payload["error"], str) and payload["error"]
    return payload["error"]


def post_json(server, path: str, body) -> tuple:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(server, "POST", path, data, {"Content-Type": "application/json"})


@pytest.fixture(autouse=True)
def still_serving_and_no_tracebacks(server, caplog):
    """After each hostile request the server answers, and no 4xx was logged with a traceback."""
    yield
    status, _, body = request(server, "GET", "/api/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    logged = [r for r in caplog.records if r.exc_info]
    assert not logged, [r.getMessage() for r in logged]


# ------------------------------------------------------------------ ids beyond SQLite's int64
@pytest.mark.parametrize("big", BIG_IDS)
def test_image_ids_beyond_int64_are_not_found(server, big):
    for suffix in ("", "/similar", "/thumb", "/file"):
        assert f"no image with id {big}" in error_of(request(server, "GET", f"/api/images/{big}{suffix}"), 404)
    status, ctype, body = request(server, "GET", f"/image/{big}")
    assert status == 404 and ctype.startswith("text/html") and f"no image with id {big}".encode() in body
    status, _, body = request(server, "GET", f"/?like={big}")
    assert status == 404 and f"no image with id {big}".encode() in body
    assert "not indexed" in error_of(request(server, "GET", f"/fragments/results?like={big}"), 400)


def test_metadata_skips_ids_beyond_int64(server, engine, corpus):
    known = image_id(engine, corpus.files["beach_00.png"])
    ids = [known, *BIG_IDS, 2**63 - 1, -(2**70)]
    status, _, body = post_json(server, "/metadata", {"ids": ids, "indice_name": "glimpse"})
    assert status == 200
    answer = json.loads(body)
    assert [a["id"] for a in answer] == ids
    assert answer[0]["metadata"]["image_path"] == str(corpus.files["beach_00.png"])
    assert all(a["metadata"] == {} for a in answer[1:])


# ------------------------------------------------------------------ JSON bodies
@pytest.mark.parametrize("path", ["/knn-service", "/metadata"])
@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"\xff\xfe{}", b'{"text": "x"'])
def test_unparseable_json_is_400(server, path, body):
    assert "invalid JSON" in error_of(post_json(server, path, body), 400)


@pytest.mark.parametrize("value", [[int(HUGE)] * 32, [0.5] * 31 + [-(10**400)]])
def test_embedding_input_that_is_not_finite_floats_is_400(server, value):
    body = json.dumps({"embedding_input": value, "indice_name": "glimpse"}).encode()
    assert "embedding_input" in error_of(post_json(server, "/knn-service", body), 400)


def test_num_images_must_be_a_count(server):
    for raw in ("1e400", "NaN", "Infinity", "-Infinity", f'"{"9" * 5000}"', '"\u00b2"', "1.5", "0"):
        body = ('{"text": "beach", "num_images": ' + raw + "}").encode()
        assert "num_images" in error_of(post_json(server, "/knn-service", body), 400), raw
    for raw in (HUGE, f'"{HUGE}"', "1e300", '" 3 "'):  # big counts are capped, as before
        status, _, body = post_json(server, "/knn-service", ('{"text": "beach", "num_images": ' + raw + "}").encode())
        assert status == 200 and len(json.loads(body)) == (3 if raw == '" 3 "' else 22), raw


# ------------------------------------------------------------------ bodies over the cap
def raw_request(server, head: bytes) -> socket.socket:
    host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.sendall(head)
    return sock


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    """Status and whatever of the response arrives (the server closes after an error)."""
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
    assert data.startswith(b"HTTP/1."), data[:200]
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/api/search/image"),
        ("POST", "/knn-service"),
        ("POST", "/fragments/image"),
        ("GET", "/api/search?q=beach"),
    ],
)
def test_content_length_over_the_cap_is_refused_before_the_body_is_read(server, method, path):
    """300 MiB announced, 16 bytes sent: the 413 comes back while the client still owes the body.

    waitress answers it itself before the app runs, in the app's JSON (web.server.JsonErrorTask); the app's own
    413 for the same cap, under servers that do not refuse first, is
    test_body_cap_refuses_on_content_length_on_every_route."""
    sock = raw_request(
        server,
        (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Content-Length: 314572800\r\n\r\n"
        ).encode()
        + b"x" * 16,
    )
    try:
        status, data = read_status(sock)  # times out (fails) if the server waits for the other 300 MiB
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert status == 413 and b"content-type: application/json" in head.lower(), data[:300]
    assert json.loads(body)["error"].startswith("request body too large")


def test_chunked_body_cannot_exceed_the_cap(engine):
    """No Content-Length: the server stops reading past the cap and answers 413 before the body ends."""
    from web.app import create_app

    app = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None, "GLIMPSE_MAX_UPLOAD_MB": 0.05})
    cap = app.config["MAX_CONTENT_LENGTH"]
    small = LiveServer(app, threads=2)
    sock = raw_request(
        small,
        b"POST /knn-service HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n",
    )
    chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
    try:
        # Twice the cap, never the final 0-chunk: a server that reads on waits for the rest and times out.
        for _ in range(2 * cap // 16384 + 1):
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the server answered and closed already
                break
        status, _ = read_status(sock)
    finally:
        sock.close()
        small.close()
    assert status == 413


def test_body_cap_refuses_on_content_length_on_every_route(engine):
    """Under any WSGI server, a request announcing more than the cap is refused before a view runs."""
    from web.app import create_app

    client = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()
    over = {"CONTENT_LENGTH": str(300 * 1024 * 1024)}
    for path in ("/api/health", "/api/search?q=beach", "/indices-list"):
        resp = client.get(path, data=b"x", environ_overrides=over)
        assert resp.status_code == 413 and set(resp.get_json()) == {"error"}, path
        assert "too large" in resp.get_json()["error"]
    page = client.get("/?q=beach", data=b"x", environ_overrides=over)
    assert page.status_code == 413 and page.mimetype == "text/html" and b"too large" in page.data
    assert client.get("/api/health").status_code == 200


def test_body_without_a_length_is_cut_at_the_cap(engine):
    """A server that passes chunked bodies on unbuffered (wsgi.input_terminated, no CONTENT_LENGTH):
    werkzeug stops reading at the cap, and the answer is a 413, not a parse error on the truncated start."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app
    from werkzeug.wrappers import Response

    from web.app import create_app

    app = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None, "GLIMPSE_MAX_UPLOAD_MB": 0.05})
    cap = app.config["MAX_CONTENT_LENGTH"]

    def unlengthed(path: str, body: bytes, content_type: str) -> Response:
        environ = EnvironBuilder(
            path=path, method="POST", input_stream=io.BytesIO(body), content_type=content_type
        ).get_environ()
        del environ["CONTENT_LENGTH"]  # (the test client would put it back)
        environ["wsgi.input_terminated"] = True
        return Response(*run_wsgi_app(app, environ, buffered=True))

    padded = json.dumps({"text": "beach", "pad": " " * (4 * cap)}).encode()
    resp = unlengthed("/knn-service", padded, "application/json")
    assert resp.status_code == 413 and "too large" in resp.get_json()["error"]
    multipart = (
        b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        + b"\x89PNG\r\n\x1a\n"
        + b"\0" * (4 * cap)
        + b"\r\n--B--\r\n"
    )
    resp = unlengthed("/api/search/image", multipart, "multipart/form-data; boundary=B")
    assert resp.status_code == 413 and set(resp.get_json()) == {"error"}
    small = json.dumps({"text": "beach", "num_images": 2}).encode()
    assert len(unlengthed("/knn-service", small, "application/json").get_json()) == 2


def test_waitress_cap_is_the_app_cap(engine):
    from web.app import create_app
    from web.server import make_server

    app = create_app(engine, config={"GLIMPSE_MAX_UPLOAD_MB": 1})
    server = make_server(app, "127.0.0.1", 0, threads=1)
    try:
        # waitress refuses a body of max_request_body_size bytes or more; the app accepts up to its cap.
        assert server.adj.max_request_body_size == app.config["MAX_CONTENT_LENGTH"] + 1
    finally:
        server.close()


# ------------------------------------------------------------------ folder filter
def test_folder_must_be_an_absolute_normalised_path(server, corpus):
    for folder in (
        "../..",
        "~root",
        "~",
        "\x00",
        "/tmp/\x00x",
        "photos/beach",
        "/a/../b",
        "/a/./b",
        "//a",
        "/a//b",
        ".",
    ):
        query = urllib.parse.urlencode({"q": "beach", "folder": folder})
        message = error_of(request(server, "GET", f"/api/search?{query}"), 400)
        assert "folder" in message and "absolute" in message, folder
        status, _, body = request(server, "GET", f"/?{query}")
        assert status == 400 and b"absolute" in body, folder
    # What the filter is for still works, trailing slash or not.
    beach = str(corpus.folder("beach"))
    for folder in (beach, beach + "/", "/"):
        query = urllib.parse.urlencode({"q": "beach", "k": 50, "folder": folder})
        status, _, body = request(server, "GET", f"/api/search?{query}")
        results = json.loads(body)["results"]
        assert status == 200 and results, folder
        assert all(r["path"].startswith(folder if folder == "/" else beach + "/") for r in results)


# ------------------------------------------------------------------ siblings: other parameters
def test_search_parameters_out_of_range_are_400(server):
    """Infinite query weights gave NaN vectors (silently no results); the other values were already 400s."""
    for q in (f"{HUGE}:beach", f"{'9' * 900}:beach", f"beach - {HUGE}:sea", "10000000:beach"):
        message = error_of(request(server, "GET", "/api/search?" + urllib.parse.urlencode({"q": q})), 400)
        assert "weight" in message, q
    for query, name in [
        (f"k={HUGE}", "k"),
        (f"page={HUGE}", "page"),
        (f"k={'9' * 5000}", "k"),
        ("k=%C2%B2", "k"),
        ("min_score=nan", "min_score"),
        ("min_score=1e400", "min_score"),
        ("date_from=99999-01-01", "date_from"),
        ("date_to=0000-00-00", "date_to"),
        ("order=%00", "order"),
        ("mode=%ff", "mode"),
    ]:
        assert name in error_of(request(server, "GET", f"/api/search?q=beach&{query}"), 400), query
    # NUL and invalid UTF-8 in the query string are just (odd) text.
    for raw in ("%00", "beach%00sea", "%ff%fe%fd", "%ED%A0%80", "%C0%AF"):
        status, _, body = request(server, "GET", f"/api/search?q={raw}&k=3")
        assert status == 200 and len(json.loads(body)["results"]) == 3, raw


def test_like_and_thumb_size_must_be_ascii_numbers(server, engine, corpus):
    known = image_id(engine, corpus.files["beach_00.png"])
    assert "like" in error_of(request(server, "GET", "/fragments/results?like=%C2%B2"), 400)
    status, _, _ = request(server, "GET", "/?like=%C2%B2")
    assert status == 400
    assert "like" in error_of(request(server, "GET", f"/fragments/results?like={'9' * 5000}"), 400)
    for size in ("%C2%B2", "9" * 5000):
        assert "size" in error_of(request(server, "GET", f"/api/images/{known}/thumb?size={size}"), 400)
