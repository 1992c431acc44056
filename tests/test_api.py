"""JSON API: every endpoint and its errors, through Flask's test client, plus `glimpse serve` for real."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from bench.big_png import header_only_png
from conftest import REPO, draw_image
from web_support import XSS_CAPTION, corpus, engine, image_id  # noqa: F401 - corpus, engine: shared module-scoped fixtures


@pytest.fixture(scope="module")
def app(engine):
    from web.app import create_app

    return create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None})


@pytest.fixture
def client(app):
    return app.test_client()


def png_bytes(seed: int = 1, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    draw_image(seed, size).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG header claiming 1.6 gigapixels: a few dozen bytes that would need gigabytes to decode."""
    return header_only_png(width, height, "RGB")


def error_of(resp, status: int) -> str:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


# ------------------------------------------------------------------ /api/search
def test_search_returns_scored_results_with_urls(client):
    body = client.get("/api/search?q=a%20sunny%20beach&k=5&mode=images").get_json()  # vision only: cosine order
    assert body["query"] == "a sunny beach" and body["k"] == 5 and body["page"] == 0
    assert body["has_more"] is True and len(body["results"]) == 5
    for r in body["results"]:
        assert {"id", "score", "path", "caption", "width", "height", "thumb_url", "file_url", "date"} <= set(r)
        assert r["thumb_url"] == f"/api/images/{r['id']}/thumb"
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_search_pages_are_consecutive(client):
    whole = client.get("/api/search?q=beach&k=10").get_json()["results"]
    first = client.get("/api/search?q=beach&k=5&page=0").get_json()
    second = client.get("/api/search?q=beach&k=5&page=1").get_json()
    assert [r["id"] for r in first["results"] + second["results"]] == [r["id"] for r in whole]
    last = client.get("/api/search?q=beach&k=20&page=1").get_json()
    assert last["has_more"] is False and 0 < len(last["results"]) < 20


def test_min_score_cuts_results(client):
    scores = [r["score"] for r in client.get("/api/search?q=beach&k=50").get_json()["results"]]
    cut = scores[3]
    kept = client.get(f"/api/search?q=beach&k=50&min_score={cut}").get_json()["results"]
    assert kept and all(r["score"] >= cut for r in kept) and len(kept) < len(scores)
    none = client.get("/api/search?q=beach&min_score=0.9999").get_json()
    assert none["results"] == [] and none["has_more"] is False


def test_folder_and_date_filters(client, corpus):
    beach = str(corpus.folder("beach"))
    got = client.get("/api/search", query_string={"q": "x", "k": 50, "folder": beach}).get_json()["results"]
    assert got and all(r["path"].startswith(beach + os.sep) for r in got)
    city = client.get("/api/search?q=x&k=50&date_from=2023-01-01").get_json()["results"]
    assert city and all(r["date"] >= "2023-01-01" for r in city)
    old = client.get("/api/search?q=x&k=50&date_to=2020-12-31").get_json()["results"]
    assert old and all(r["date"][:10] <= "2020-12-31" for r in old)
    assert {r["id"] for r in city}.isdisjoint({r["id"] for r in old})


def test_order_by_date(client):
    got = client.get("/api/search?q=beach&k=50&order=date").get_json()["results"]
    dates = [r["date"] for r in got]
    assert len(dates) > 10 and dates == sorted(dates, reverse=True)


def test_caption_mode(client):
    body = client.get("/api/search?q=tall%20buildings&mode=captions&k=10").get_json()
    assert body["mode"] == "captions"
    assert body["results"] and all(r["matched_caption"] for r in body["results"])


def test_combined_query(client):
    body = client.get("/api/search", query_string={"q": "2:beach + sunset - people", "k": 3}).get_json()
    assert len(body["results"]) == 3


def test_query_naming_a_server_file_is_text_not_an_image(client, engine, corpus):
    """Over HTTP a query is never read from the server's disk (the CLI may do that, the web must not)."""
    from search.query.kinds import Paging, TextQuery, VectorQuery

    path = str(corpus.files["beach_04.png"])
    got = client.get("/api/search", query_string={"q": path, "k": 3, "mode": "images"}).get_json()["results"]
    as_text = engine.search(VectorQuery(engine.query_vector(TextQuery(path))), page=Paging(k=3)).results
    assert [r["id"] for r in got] == [r.id for r in as_text]
    assert got[0]["score"] < 0.99


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "missing query"),
        ("q=beach&k=0", "k must be"),
        ("q=beach&k=abc", "k must be"),
        ("q=beach&k=201", "k must be"),
        ("q=beach&page=-1", "page must be"),
        ("q=beach&k=200&page=5", "too deep"),
        ("q=beach&min_score=abc", "min_score"),
        ("q=beach&min_score=2", "min_score"),
        ("q=beach&date_from=yesterday", "date_from"),
        ("q=beach&date_from=2024-02-01&date_to=2024-01-01", "after"),
        ("q=beach&order=random", "order"),
        ("q=beach&mode=audio", "mode"),
        ("q=%20%20", "missing query"),
        ("q=beach%20-%20beach", "cancel out"),
    ],
)
def test_search_parameter_errors(client, query, message):
    assert message in error_of(client.get(f"/api/search?{query}"), 400)


# ------------------------------------------------------------------ /api/search/image
def test_search_by_uploaded_image_finds_itself(client, engine, corpus):
    path = corpus.files["beach_03.png"]
    resp = client.post("/api/search/image?k=3", data={"image": (open(path, "rb"), "beach_03.png")})
    body = resp.get_json()
    assert resp.status_code == 200 and body["query"]["kind"] == "image" and body["query"]["filename"] == "beach_03.png"
    assert body["results"][0]["id"] == image_id(engine, path)
    assert body["results"][0]["score"] > 0.99 and len(body["results"]) == 3


def test_upload_takes_filters_from_the_form(client, corpus):
    beach = str(corpus.folder("beach"))
    data = {"image": (io.BytesIO(png_bytes(150)), "q.png"), "folder": beach, "k": "4"}
    got = client.post("/api/search/image", data=data).get_json()["results"]
    assert len(got) == 4 and all(r["path"].startswith(beach) for r in got)


def test_upload_errors(client):
    assert "image" in error_of(client.post("/api/search/image", data={}), 400)
    assert "empty" in error_of(client.post("/api/search/image", data={"image": (io.BytesIO(b""), "a.png")}), 400)
    text = {"image": (io.BytesIO(b"hello, I am text"), "a.png")}
    assert "not a supported image" in error_of(client.post("/api/search/image", data=text), 415)
    truncated = {"image": (io.BytesIO(png_bytes()[:60]), "a.png")}
    assert "cannot use this image" in error_of(client.post("/api/search/image", data=truncated), 400)
    bomb = {"image": (io.BytesIO(bomb_png()), "bomb.png")}
    # Refused from its header, over the upload pixel limit (its size is too much for Pillow to even open).
    assert "GLIMPSE_MAX_UPLOAD_PIXELS" in error_of(client.post("/api/search/image", data=bomb), 413)
    html = {"image": (io.BytesIO(b"<svg onload=alert(1)>"), "a.svg")}
    error_of(client.post("/api/search/image", data=html), 415)
    error_of(client.get("/api/search/image"), 405)


def test_upload_size_limit(engine):
    from web.app import create_app

    small = create_app(engine, config={"GLIMPSE_MAX_UPLOAD_MB": 0.01}).test_client()  # ~10 KB
    big = png_bytes(3, (200, 200))
    assert len(big) > 10 * 1024
    assert "too large" in error_of(small.post("/api/search/image", data={"image": (io.BytesIO(big), "b.png")}), 413)
    huge = {"image": (io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"0" * 100_000), "h.png")}
    assert "too large" in error_of(small.post("/api/search/image", data=huge), 413)  # over MAX_CONTENT_LENGTH


# ------------------------------------------------------------------ images by id
def test_similar_excludes_the_image_itself(client, engine, corpus):
    iid = image_id(engine, corpus.files["beach_02.png"])
    body = client.get(f"/api/images/{iid}/similar?k=5").get_json()
    assert body["query"] == {"kind": "similar", "id": iid}
    assert len(body["results"]) == 5 and iid not in [r["id"] for r in body["results"]]
    folder = client.get(f"/api/images/{iid}/similar", query_string={"folder": str(corpus.folder("city"))}).get_json()
    assert all("/city/" in r["path"] for r in folder["results"])


def test_similar_errors(client, engine, corpus):
    assert "no image" in error_of(client.get("/api/images/99999/similar"), 404)
    broken = image_id(engine, corpus.files["broken"])  # a failed row is not an image to search from
    assert "no image" in error_of(client.get(f"/api/images/{broken}/similar"), 404)
    error_of(client.get("/api/images/1/similar?k=-3"), 400)


def test_image_metadata(client, engine, corpus):
    iid = image_id(engine, corpus.files["beach_00.png"])
    body = client.get(f"/api/images/{iid}").get_json()
    assert body["id"] == iid and body["path"] == str(corpus.files["beach_00.png"])
    assert body["captions"] == ["a sunny beach with blue water"] and body["caption"] == body["captions"][0]
    assert (body["width"], body["height"], body["format"]) == (120, 90, "PNG")
    assert body["date"].startswith("2020-06-01") and body["file_url"] == f"/api/images/{iid}/file"
    assert "no image" in error_of(client.get("/api/images/99999"), 404)
    assert "no image" in error_of(client.get(f"/api/images/{image_id(engine, corpus.files['broken'])}"), 404)
    error_of(client.get("/api/images/abc"), 404)


def test_thumbnail_is_cached_with_etag(client, engine, corpus):
    from PIL import Image

    iid = image_id(engine, corpus.files["beach_01.png"])
    resp = client.get(f"/api/images/{iid}/thumb")
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    etag = resp.headers["ETag"]
    assert etag and "max-age=" in resp.headers["Cache-Control"]
    assert Image.open(io.BytesIO(resp.data)).size == (120, 90)  # never upscaled
    cached = list(engine.paths.thumbs.rglob(f"{iid}-320-*.jpg"))
    assert len(cached) == 1
    again = client.get(f"/api/images/{iid}/thumb", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.data
    small = client.get(f"/api/images/{iid}/thumb?size=160")
    assert small.status_code == 200 and small.headers["ETag"] != etag


def test_thumbnail_downscales_large_images_and_follows_a_reindexed_change(tmp_path):
    from PIL import Image

    from search.engine import OpenedImage
    from web.thumbs import thumbnail

    src = tmp_path / "big.jpg"
    draw_image(7, (1200, 800)).save(src)
    st = src.stat()

    def opened(mtime_ns: int = st.st_mtime_ns) -> OpenedImage:
        return OpenedImage(42, open(src, "rb"), "big.jpg", st.st_size, mtime_ns / 1e9, mtime_ns)

    with opened() as image:
        out, tag = thumbnail(tmp_path / "thumbs", image, 160)
    assert Image.open(out).size == (160, 107) and tag.startswith("42-160-")
    with opened() as image:
        assert thumbnail(tmp_path / "thumbs", image, 160) == (out, tag)  # cached
        with pytest.raises(ValueError):
            thumbnail(tmp_path / "thumbs", image, 999)
    with opened(st.st_mtime_ns + 5_000_000_000) as image:  # the file as reindexed after an edit
        assert thumbnail(tmp_path / "thumbs", image, 160)[1] != tag
    assert len(list((tmp_path / "thumbs").rglob("42-160-*.jpg"))) == 1  # the stale one is gone


def test_a_touched_file_is_not_served_until_reindexed(client, engine, corpus):
    path = corpus.files["city_03.jpg"]
    iid = image_id(engine, path)
    first = client.get(f"/api/images/{iid}/thumb").headers["ETag"]
    st = os.stat(path)
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        assert "no longer the file that was indexed" in error_of(client.get(f"/api/images/{iid}/thumb"), 404)
        assert "no longer the file that was indexed" in error_of(client.get(f"/api/images/{iid}/file"), 404)
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert client.get(f"/api/images/{iid}/thumb").headers["ETag"] == first


def test_thumbnail_errors(client, engine, corpus):
    error_of(client.get("/api/images/1/thumb?size=999"), 400)
    error_of(client.get("/api/images/1/thumb?size=abc"), 400)
    assert "no image" in error_of(client.get("/api/images/99999/thumb"), 404)
    broken = image_id(engine, corpus.files["broken"])
    assert "no image" in error_of(client.get(f"/api/images/{broken}/thumb"), 404)  # failed rows serve nothing
    assert "no image" in error_of(client.get(f"/api/images/{broken}/file"), 404)
    path = corpus.files["city_05.jpg"]
    iid = image_id(engine, path)
    os.rename(path, str(path) + ".away")
    try:
        assert "no longer on disk" in error_of(client.get(f"/api/images/{iid}/thumb"), 404)
        assert "no longer on disk" in error_of(client.get(f"/api/images/{iid}/file"), 404)
    finally:
        os.rename(str(path) + ".away", path)


def test_file_is_served_by_id_only(client, engine, corpus):
    path = corpus.files["city_01.jpg"]
    iid = image_id(engine, path)
    resp = client.get(f"/api/images/{iid}/file?path=/etc/passwd")
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    assert resp.data == path.read_bytes()
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(f"/api/images/{iid}/file", headers={"If-None-Match": resp.headers["ETag"]}).status_code == 304
    error_of(client.get("/api/images/99999/file"), 404)
    for sneaky in ("/api/images/..%2F..%2Fetc%2Fpasswd/file", "/api/images/-1/file", "/api/images/1.5/file"):
        error_of(client.get(sneaky), 404)


# ------------------------------------------------------------------ health, stats, openapi, errors
def test_health_and_stats(client, corpus):
    health = client.get("/api/health").get_json()
    published = (corpus.home / "index" / "current").read_text().strip()  # the version the indexer made live
    assert health == {"status": "ok", "images_indexed": 22, "index_version": published}
    stats = client.get("/api/stats").get_json()
    assert stats["images_indexed"] == 22 and stats["images_failed"] == 1 and stats["captions"] == 4
    assert stats["model"]["dim"] == 32 and stats["roots"]


def _flask_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_openapi_matches_the_routes(app, client):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    served = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.endpoint.startswith("clip_compat."):
            served[_flask_path(rule.rule)] = {m.lower() for m in rule.methods} - {"head", "options"}
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    assert documented == served
    result_fields = doc["components"]["schemas"]["Result"]["allOf"][0]["$ref"]
    assert result_fields.endswith("/Image")
    needed = set(doc["components"]["schemas"]["Image"]["required"]) | {"score"}
    got = client.get("/api/search?q=beach&k=1").get_json()["results"][0]
    assert needed <= set(got)
    # Every documented query parameter of /api/search is accepted with a valid value.
    valid = {
        "q": "beach",
        "k": "2",
        "page": "1",
        "min_score": "0.1",
        "folder": "/",
        "date_from": "2000-01-01",
        "date_to": "2030-01-01",
        "order": "date",
        "mode": "images",
    }
    names = [p["name"] for p in doc["paths"]["/api/search"]["get"]["parameters"]]
    assert set(names) == set(valid)
    assert client.get("/api/search", query_string=valid).status_code == 200


def test_unknown_routes_and_methods_are_json(client):
    error_of(client.get("/api/nothing-here"), 404)
    error_of(client.post("/api/search?q=beach"), 405)
    error_of(client.delete("/api/images/1"), 405)


def test_security_headers(client):
    page = client.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_host_header_guard(engine):
    from web.app import create_app

    guarded = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": ["localhost", "127.0.0.1"]}).test_client()
    assert guarded.get("/api/health", headers={"Host": "127.0.0.1:5000"}).status_code == 200
    assert "not allowed" in error_of(guarded.get("/api/health", headers={"Host": "evil.example"}), 403)


def test_nothing_indexed_yet(tmp_path):
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    empty = create_app(Paths.resolve(tmp_path / "empty-home")).test_client()
    assert "glimpse index" in error_of(empty.get("/api/search?q=beach"), 503)
    assert empty.get("/api/health").get_json()["images_indexed"] == 0
    page = empty.get("/?q=beach")
    assert page.status_code == 503 and "glimpse index" in page.get_data(as_text=True)
    assert Engine  # imported for the type of create_app's argument


# ------------------------------------------------------------------ pages through the test client
def test_page_renders_results_and_escapes(client, engine, corpus):
    html = client.get("/?q=anything&k=200").get_data(as_text=True)
    assert html.count('class="card"') == 22
    assert XSS_CAPTION not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "odd &lt;name&gt; &amp; &#39;quote&#39;.png" in html
    odd = image_id(engine, corpus.files["odd"])
    detail = client.get(f"/image/{odd}").get_data(as_text=True)
    assert "&lt;script&gt;" in detail and "<script>alert" not in detail


def test_page_states_and_errors(client):
    welcome = client.get("/").get_data(as_text=True)
    assert 'id="welcome"' in welcome and "22 images indexed" in welcome
    empty = client.get("/?q=beach&min_score=0.9999").get_data(as_text=True)
    assert 'id="empty"' in empty and "removing a filter" in empty
    bad = client.get("/?q=beach&k=abc")
    assert bad.status_code == 400 and "k must be an integer" in bad.get_data(as_text=True)
    missing = client.get("/?like=99999")
    assert missing.status_code == 404 and "no image with id 99999" in missing.get_data(as_text=True)
    assert client.get("/image/99999").status_code == 404
    assert client.get("/no/such/page").status_code == 404


def test_fragments(client, corpus):
    first = client.get("/?q=beach&k=5").get_data(as_text=True)
    more = re.search(r'data-fragment="([^"]+)"', first).group(1).replace("&amp;", "&")
    frag = client.get(more).get_json()
    assert frag["count"] == 5 and frag["page"] == 1 and frag["has_more"] and "page=2" in frag["next_url"]
    assert frag["html"].count('class="card"') == 5
    image = client.post(
        "/fragments/image", data={"image": (open(corpus.files["city_02.jpg"], "rb"), "c.jpg"), "k": "3"}
    )
    assert image.get_json()["count"] == 3
    error_of(client.get("/fragments/results"), 400)
    error_of(client.post("/fragments/image", data={"image": (io.BytesIO(b"nope"), "x.png")}), 415)


# ------------------------------------------------------------------ the real server
def test_glimpse_serve_on_loopback(corpus, tiny_model):
    """`glimpse serve --port 0` warms the model, prints its URL and answers on 127.0.0.1."""
    env = dict(os.environ, GLIMPSE_HOME=str(corpus.home), PYTHONUNBUFFERED="1")
    env.pop("GLIMPSE_ALLOWED_HOSTS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "glimpse.cli", "serve", "--port", "0", "--threads", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    try:
        url, lines, deadline = None, [], time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Glimpse is serving on (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(lines)
        # How soon the first query is answered is a figure, not a test: bench/run.py's serve benchmark
        # ("server ready / first text query answered", BENCHMARKS.md).
        with urllib.request.urlopen(url + "api/search?q=beach&k=3", timeout=30) as resp:
            assert len(json.load(resp)["results"]) == 3
        with urllib.request.urlopen(url + "api/health", timeout=10) as resp:
            assert json.load(resp)["status"] == "ok"
        rebinding = urllib.request.Request(url + "api/health", headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(rebinding, timeout=10)
        assert err.value.code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_web_only_talks_to_the_engine():
    """web/ goes through search.engine; FAISS and SQL stay behind it, and so do the engine's store and index."""
    import ast

    for path in (REPO / "web").glob("*.py"):
        source = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(faiss|sqlalchemy)\b", source, re.M), path
        assert not re.search(r"^\s*from\s+search\.(store|index)\b", source, re.M), path
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("store", "index"), f"{path.name}:{node.lineno} reads .{node.attr}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "getattr":
                names = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
                assert names not in (["store"], ["index"]), f"{path.name}:{node.lineno} getattr {names}"
            # Over HTTP a query term is never a server path: only the CLI builds FileQuery or allow_files.
            if isinstance(node, ast.Name):
                assert node.id != "FileQuery", f"{path.name}:{node.lineno}"
            if isinstance(node, ast.keyword):
                assert node.arg != "allow_files", f"{path.name}:{node.lineno}"
