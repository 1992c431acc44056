"""/metrics in the Prometheus text format, scraped from a real waitress server."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from web_support import LiveServer, corpus, engine, image_id  # noqa: F401 - corpus, engine: shared module-scoped fixtures


@pytest.fixture(scope="module")
def live(engine):
    from web.app import create_app

    server = LiveServer(create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"]}), threads=4)
    yield server
    server.close()


def call(url: str, data: bytes | None = None, headers: dict | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def multipart(payload: bytes) -> tuple[bytes, dict]:
    boundary = "metrics-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics as {(name, labels): value}; parsing proves the format."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_not_by_path(live, corpus, engine):
    iid = image_id(engine, corpus.files["beach_00.png"])
    for _ in range(3):
        assert call(f"{live.url}/api/search?q=beach&k=2") == 200
    assert call(f"{live.url}/api/images/{iid}/thumb") == 200
    assert call(f"{live.url}/api/images/99999/thumb") == 404
    assert call(f"{live.url}/no/such/page/12345") == 404
    samples = scrape(live.url)
    assert value(samples, "glimpse_http_requests_total", method="GET", route="/api/search", status="200") == 3
    thumb = "/api/images/<int:image_id>/thumb"
    assert value(samples, "glimpse_http_requests_total", method="GET", route=thumb, status="200") >= 1
    assert value(samples, "glimpse_http_requests_total", method="GET", route=thumb, status="404") >= 1
    assert value(samples, "glimpse_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    assert value(samples, "glimpse_http_request_duration_seconds_count", method="GET", route="/api/search") == 3
    routes = {dict(labels).get("route") for (name, labels) in samples if name == "glimpse_http_requests_total"}
    assert not any(r and ("12345" in r or "99999" in r or f"/{iid}/" in r) for r in routes)


def test_search_stages_are_timed(live):
    before = scrape(live.url)
    assert call(f"{live.url}/api/search?q=sunny+beach&k=3") == 200
    after = scrape(live.url)
    for stage in ("encode", "faiss", "hydrate"):
        grew = value(after, "glimpse_search_stage_duration_seconds_count", stage=stage) - value(
            before, "glimpse_search_stage_duration_seconds_count", stage=stage
        )
        assert grew >= 1, stage
        assert value(after, "glimpse_search_stage_duration_seconds_sum", stage=stage) > 0


def test_index_and_job_gauges_match_the_engine(live, engine):
    samples = scrape(live.url)
    health = engine.health()
    assert value(samples, "glimpse_store_up") == 1
    assert value(samples, "glimpse_index_vectors") == health["images_indexed"] == 22
    assert value(samples, "glimpse_images_indexed") == 22
    assert value(samples, "glimpse_images_failed") == 1  # broken.jpg
    assert value(samples, "glimpse_index_version") == int(health["index_version"])
    assert value(samples, "glimpse_last_job_info", kind="index", outcome="ok") == 1
    assert value(samples, "glimpse_last_job_success") == 1
    assert value(samples, "glimpse_last_job_duration_seconds") > 0
    assert value(samples, "glimpse_job_running") == 0
    # The scrape asks for no failed-file list (stats(failed_limit=0) used to list them all).
    assert engine.stats(failed_limit=0)["failed"] == []


def test_upload_rejections_are_counted_by_reason(live):
    not_image, headers = multipart(b"%PDF-1.4 definitely not an image")
    assert call(f"{live.url}/api/search/image", not_image, headers) == 415
    empty, headers = multipart(b"")
    assert call(f"{live.url}/api/search/image", empty, headers) == 400
    assert call(f"{live.url}/fragments/image", not_image, headers) == 415
    knn = json.dumps({"image": base64.b64encode(b"not an image at all").decode()}).encode()
    assert call(f"{live.url}/knn-service", knn, {"Content-Type": "application/json"}) == 415
    text_error = json.dumps({"text": 5}).encode()  # a bad text query is not an upload rejection
    assert call(f"{live.url}/knn-service", text_error, {"Content-Type": "application/json"}) == 400
    samples = scrape(live.url)
    rejected = "glimpse_upload_rejections_total"
    assert value(samples, rejected, route="/api/search/image", reason="unsupported") == 1
    assert value(samples, rejected, route="/api/search/image", reason="invalid") == 1
    assert value(samples, rejected, route="/fragments/image", reason="unsupported") == 1
    assert value(samples, rejected, route="/knn-service", reason="unsupported") == 1
    assert value(samples, rejected, route="/knn-service", reason="invalid") == 0


def test_each_app_has_its_own_registry(engine):
    from web.app import create_app

    first, second = create_app(engine).test_client(), create_app(engine).test_client()
    first.get("/api/health")
    seen = {}
    for name, client in (("first", first), ("second", second)):
        resp = client.get("/metrics")
        assert resp.status_code == 200
        families = text_string_to_metric_families(resp.get_data(as_text=True))
        seen[name] = {(s.name, s.labels.get("route")) for family in families for s in family.samples}
    assert ("glimpse_http_requests_total", "/api/health") in seen["first"]
    assert ("glimpse_http_requests_total", "/api/health") not in seen["second"]  # nothing leaks between apps
