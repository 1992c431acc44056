"""clip-retrieval compatibility: its real ClipClient against a live Glimpse server, plus the raw endpoints."""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import json
import threading
import urllib.request

import pytest

from conftest import draw_image
from search.query.kinds import FileQuery, Paging, TextQuery, VectorQuery
from web_support import corpus, engine, image_id, server  # noqa: F401 - corpus, engine, server: shared module-scoped fixtures


def http_get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


def http_post_json(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def load_clip_client():
    """clip_retrieval/__init__ imports its whole back end (faiss, pandas, torch models…): load only the client file."""
    pytest.importorskip("requests")  # ClipClient's only third-party import
    spec = importlib.util.find_spec("clip_retrieval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("clip-retrieval is not installed (pip install --no-deps clip-retrieval==2.45.0)")
    path = f"{spec.submodule_search_locations[0]}/clip_client.py"
    mod_spec = importlib.util.spec_from_file_location("clip_client_only", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def clip_client():
    return load_clip_client()


@pytest.fixture(scope="module")
def client(engine):
    from web.app import create_app

    return create_app(engine).test_client()


def knn(client, **body):
    return client.post("/knn-service", data=json.dumps({"indice_name": "glimpse", "modality": "image", **body}))


def error_of(resp, status: int) -> str:
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()["error"]


# ------------------------------------------------------------------ the real ClipClient
def test_clip_client_text_query(server, clip_client):
    cc = clip_client.ClipClient(url=f"{server.url}/knn-service", indice_name="glimpse", num_images=5, deduplicate=False)
    results = cc.query(text="a sunny beach")
    assert len(results) == 5
    for r in results:
        assert set(r) == {"id", "similarity", "url", "image_path", "caption"}
    sims = [r["similarity"] for r in results]
    assert sims == sorted(sims, reverse=True)
    status, content = http_get(results[0]["url"])
    assert status == 200 and content == open(results[0]["image_path"], "rb").read()


def test_clip_client_image_query_finds_itself(server, clip_client, engine, corpus):
    cc = clip_client.ClipClient(url=f"{server.url}/knn-service", indice_name="glimpse", num_images=3)
    path = corpus.files["city_04.jpg"]
    results = cc.query(image=str(path))
    assert results[0]["id"] == image_id(engine, path) and results[0]["similarity"] > 0.99
    assert results[0]["image_path"] == str(path)


def test_clip_client_embedding_query(server, clip_client, engine):
    cc = clip_client.ClipClient(url=f"{server.url}/knn-service", indice_name="glimpse", num_images=4, deduplicate=False)
    vec = engine.query_vector(TextQuery("waves on the sand"))
    results = cc.query(embedding_input=vec.tolist())
    assert [r["id"] for r in results] == [r.id for r in engine.search(VectorQuery(vec), page=Paging(k=4)).results]


def test_clip_client_caption_modality(server, clip_client, engine, corpus):
    cc = clip_client.ClipClient(
        url=f"{server.url}/knn-service", indice_name="glimpse", num_images=10, modality=clip_client.Modality.TEXT
    )
    results = cc.query(text="tall buildings at night")
    captioned = {image_id(engine, corpus.root / p) for p in corpus.captions}
    assert results and {r["id"] for r in results} <= captioned
    assert results[0]["caption"] == "tall buildings at night"


def test_deduplicate_is_honoured(server, clip_client, engine, corpus):
    original, copy = corpus.files["beach_05.png"], corpus.files["dup"]
    ids = {image_id(engine, original), image_id(engine, copy)}
    a, b = (engine.query_vector(FileQuery(str(p))) for p in (original, copy))
    assert float(a @ b) >= 0.94  # the corpus really has a near-duplicate pair
    common = dict(url=f"{server.url}/knn-service", indice_name="glimpse", num_images=30)
    with_dups = clip_client.ClipClient(deduplicate=False, **common).query(image=str(original))
    without = clip_client.ClipClient(deduplicate=True, **common).query(image=str(original))
    assert ids <= {r["id"] for r in with_dups}
    assert len(ids & {r["id"] for r in without}) == 1 and without[0]["id"] == image_id(engine, original)
    assert len(without) < len(with_dups)


def test_indices_list_and_metadata_over_http(server, engine, corpus):
    assert json.loads(http_get(f"{server.url}/indices-list")[1]) == ["glimpse"]
    iid = image_id(engine, corpus.files["beach_00.png"])
    meta = http_post_json(f"{server.url}/metadata", {"ids": [iid, 99999], "indice_name": "glimpse"})
    assert meta[0]["id"] == iid and meta[0]["metadata"]["caption"] == "a sunny beach with blue water"
    assert meta[0]["metadata"]["image_path"] == str(corpus.files["beach_00.png"])
    assert meta[0]["metadata"]["url"] == f"{server.url}/api/images/{iid}/file"
    assert meta[1] == {"id": 99999, "metadata": {}}


# ------------------------------------------------------------------ the raw endpoints
def test_metadata_only_for_the_first_num_images(client):
    results = knn(client, text="beach", num_images=3, num_result_ids=10).get_json()
    assert len(results) == 10
    assert all("url" in r and "caption" in r for r in results[:3])
    assert all(set(r) == {"id", "similarity"} for r in results[3:])


def test_body_is_json_whatever_the_content_type(client):
    body = json.dumps({"text": "beach", "modality": "image", "num_images": 2, "indice_name": "glimpse"})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        resp = client.post("/knn-service", data=body, content_type=ctype)
        assert resp.status_code == 200 and len(resp.get_json()) == 2


def test_unsupported_flags_are_accepted_and_ignored(client):
    resp = knn(
        client,
        text="beach",
        num_images=2,
        use_mclip=True,
        use_safety_model=True,
        use_violence_detector=True,
        aesthetic_score=9,
        aesthetic_weight=0.5,
    )
    assert resp.status_code == 200 and len(resp.get_json()) == 2


def test_base64_image_with_or_without_data_prefix(client, engine, corpus):
    path = corpus.files["beach_07.png"]
    b64 = base64.b64encode(path.read_bytes()).decode()
    for image in (b64, "data:image/png;base64," + b64):
        top = knn(client, image=image, num_images=1).get_json()[0]
        assert top["id"] == image_id(engine, path)


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({}, 400, "must fill one of"),
        ({"text": "x", "indice_name": "laion5B"}, 400, "unknown indice_name"),
        ({"text": "x", "modality": "audio"}, 400, "modality"),
        ({"text": "x", "num_images": 0}, 400, "num_images"),
        ({"text": "x", "num_images": "ten"}, 400, "num_images"),
        ({"image": "***not base64***"}, 400, "base64"),
        ({"image": base64.b64encode(b"just some text").decode()}, 415, "not a supported image"),
        ({"embedding_input": [0.1, 0.2]}, 400, "embedding_input"),
        ({"embedding_input": "abc"}, 400, "embedding_input"),
        ({"image_url": "http://127.0.0.1:1/x.png"}, 400, "disabled"),
        ({"image": base64.b64encode(draw_image(1).tobytes()).decode(), "modality": "text"}, 400, "needs a text query"),
    ],
)
def test_knn_errors(client, body, status, message):
    assert message in error_of(knn(client, **{"num_images": 3, **body}), status)


def test_knn_rejects_non_json(client):
    assert "JSON" in error_of(client.post("/knn-service", data=b"{not json"), 400)
    assert "JSON object" in error_of(client.post("/knn-service", data=b"[1, 2]"), 400)


def test_metadata_errors(client):
    assert "ids" in error_of(client.post("/metadata", data=json.dumps({"ids": "1,2"})), 400)
    assert "ids" in error_of(client.post("/metadata", data=json.dumps({"ids": [1, "2"]})), 400)
    assert "unknown indice_name" in error_of(
        client.post("/metadata", data=json.dumps({"ids": [1], "indice_name": "x"})), 400
    )
    assert client.post("/metadata", data=json.dumps({"ids": []})).get_json() == []


def test_metadata_reads_the_store_in_batches_not_per_id(client, engine, corpus):
    """1,000 ids once took 2,000 queries (a row and its captions per id); now a few per 500 ids."""
    from sqlalchemy import event

    iid = image_id(engine, corpus.files["beach_00.png"])
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine.store.engine, "before_cursor_execute", count)
    try:
        got = client.post("/metadata", data=json.dumps({"ids": [iid, *range(100_000, 100_999)]})).get_json()
    finally:
        event.remove(engine.store.engine, "before_cursor_execute", count)
    assert len(got) == 1000 and got[0]["metadata"]["caption"] == "a sunny beach with blue water"
    assert all(item["metadata"] == {} for item in got[1:])
    assert len(statements) <= 6, statements


def test_base64_upload_size_limit(engine):
    from web.app import create_app

    small = create_app(engine, config={"GLIMPSE_MAX_UPLOAD_MB": 0.01}).test_client()
    buf = io.BytesIO()
    draw_image(3, (200, 200)).save(buf, "PNG")
    assert "too large" in error_of(knn(small, image=base64.b64encode(buf.getvalue()).decode()), 413)


@pytest.fixture
def image_host(corpus):
    """A loopback HTTP server serving the corpus folder, standing in for a remote image host."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(corpus.root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_image_url_only_when_the_operator_enables_it(engine, corpus, image_host):
    from web.app import create_app

    url = f"{image_host}/city/city_05.jpg"
    default = create_app(engine).test_client()
    assert "GLIMPSE_ALLOW_IMAGE_URL" in error_of(knn(default, image_url=url), 400)
    enabled = create_app(engine, config={"GLIMPSE_ALLOW_IMAGE_URL": True}).test_client()
    top = knn(enabled, image_url=url, num_images=1).get_json()[0]
    assert top["id"] == image_id(engine, corpus.files["city_05.jpg"])
    assert "http(s)" in error_of(knn(enabled, image_url="file:///etc/passwd"), 400)
    assert "could not fetch" in error_of(knn(enabled, image_url=f"{image_host}/missing.png"), 400)
    assert "not a supported image" in error_of(knn(enabled, image_url=f"{image_host}/captions.jsonl"), 415)


def test_cors_only_for_configured_origins(engine):
    from web.app import create_app

    origin = "https://rom1504.github.io"
    closed = create_app(engine).test_client()
    assert "Access-Control-Allow-Origin" not in closed.get("/indices-list", headers={"Origin": origin}).headers
    opened = create_app(engine, config={"GLIMPSE_CORS_ORIGINS": [origin]}).test_client()
    resp = opened.get("/indices-list", headers={"Origin": origin})
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert (
        "Access-Control-Allow-Origin"
        not in opened.get("/indices-list", headers={"Origin": "https://evil.example"}).headers
    )
    assert "Access-Control-Allow-Origin" not in opened.get("/api/stats", headers={"Origin": origin}).headers
    preflight = opened.options("/knn-service", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == origin
