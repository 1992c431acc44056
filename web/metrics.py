"""Prometheus metrics at ``/metrics``, through prometheus_client, one ``CollectorRegistry`` per app.

- ``glimpse_http_requests_total{method,route,status}`` and
  ``glimpse_http_request_duration_seconds{method,route}``: labelled by the
  Flask URL rule (``/api/images/<int:image_id>/thumb``), never the raw path,
  and by a fixed set of methods, so a client cannot grow the label sets.
- ``glimpse_search_stage_duration_seconds{stage}``: encode / faiss / hydrate,
  timed by the engine through ``search.stages`` (no Flask in search/).
- ``glimpse_upload_rejections_total{route,reason}``: 4xx answers of the upload
  routes, read from the status in an after_request hook: 413 too_large, 415
  unsupported, 400 invalid (undecodable image, pixel bomb, empty or missing
  file, bad parameter). On ``/knn-service``, whose 400s may be about a text
  query, only 413 and 415 count.
- ``glimpse_ocr_images_{read,with_text,failed,pending}`` and the last text-reading job's images,
  failures and images per second (``glimpse_ocr_last_job_*``).
- Index, image and last-job gauges are read at scrape time from cheap Engine
  calls (``health()``, ``stats(failed_limit=0)``), so they are never stale.

A per-app registry because tests build several apps in one process, where the
global default registry would refuse the second registration.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from search.engine import Engine
from search.stages import reset_observer, set_observer

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REJECTION_REASONS = {400: "invalid", 413: "too_large", 415: "unsupported"}
# Upload endpoints and the statuses that mean their image was refused.
UPLOAD_ENDPOINTS = {
    "api.search_image": frozenset({400, 413, 415}),
    "pages.fragment_image": frozenset({400, 413, 415}),
    "clip_compat.knn_service": frozenset({413, 415}),
}


def _timestamp(iso: str | None) -> float | None:
    """Job times are naive UTC ISO strings (search.store.schema.utcnow)."""
    if not iso:
        return None
    return dt.datetime.fromisoformat(iso).replace(tzinfo=dt.timezone.utc).timestamp()


class EngineCollector:
    """Index, corpus and last-job gauges, read from the engine at each scrape."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        up = GaugeMetricFamily("glimpse_store_up", "1 when the engine's state could be read for this scrape")
        try:
            health = self.engine.health()
            stats = self.engine.stats(failed_limit=0)
        except Exception:  # a scrape must not fail because the database is busy or gone
            log.exception("metrics: cannot read the engine's state")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "glimpse_index_vectors", "Image vectors in the live index", value=health["images_indexed"]
        )
        version = health["index_version"]
        if version and version.isdigit():
            yield GaugeMetricFamily("glimpse_index_version", "Version number of the live index", value=int(version))
        for key, help_text in (
            ("images_indexed", "Images indexed successfully"),
            ("images_failed", "Files that could not be indexed"),
            ("captions", "Captions stored"),
        ):
            yield GaugeMetricFamily(f"glimpse_{key}", help_text, value=stats.get(key, 0))
        yield from _ocr_metrics(stats)
        jobs = stats.get("jobs") or []
        yield GaugeMetricFamily(
            "glimpse_job_running",
            "1 while an index job runs",
            value=int(bool(jobs) and jobs[0]["outcome"] == "running"),
        )
        last = next((j for j in jobs if j["outcome"] != "running"), None)
        if last is None:
            return
        info = GaugeMetricFamily(
            "glimpse_last_job_info", "The last finished index job (value 1)", labels=["kind", "outcome"]
        )
        info.add_metric([last["kind"] or "", last["outcome"] or ""], 1)
        yield info
        yield GaugeMetricFamily(
            "glimpse_last_job_success",
            "1 when the last finished index job succeeded",
            value=int(last["outcome"] == "ok"),
        )
        started, finished = _timestamp(last["started_at"]), _timestamp(last["finished_at"])
        if finished is not None:
            yield GaugeMetricFamily(
                "glimpse_last_job_end_timestamp_seconds",
                "When the last finished index job ended (Unix time)",
                value=finished,
            )
            if started is not None:
                yield GaugeMetricFamily(
                    "glimpse_last_job_duration_seconds",
                    "How long the last finished index job ran",
                    value=finished - started,
                )


def _ocr_metrics(stats: dict):
    """Text inside images: images read, not readable, pending, and the last job's reading throughput."""
    ocr = stats.get("ocr") or {}
    for key, help_text in (
        ("read", "Images whose text was read (OCR), whether or not they hold any"),
        ("with_text", "Images with text in the keyword index"),
        ("failed", "Images whose text could not be read (a failure or the time limit)"),
        ("pending", "Indexed images whose text the installed reader has not read yet"),
    ):
        yield GaugeMetricFamily(f"glimpse_ocr_images_{key}", help_text, value=ocr.get(key, 0))
    last = next((j for j in stats.get("jobs") or [] if j.get("ocr_read")), None)
    if last is not None:
        yield GaugeMetricFamily(
            "glimpse_ocr_last_job_images", "Images the last job that read text read", value=last["ocr_read"]
        )
        yield GaugeMetricFamily(
            "glimpse_ocr_last_job_failures",
            "Images the last job that read text could not read (failures and timeouts)",
            value=last["ocr_failed"],
        )
        if last.get("ocr_seconds"):
            yield GaugeMetricFamily(
                "glimpse_ocr_last_job_images_per_second",
                "Text-reading throughput of the last job that read text (images per second, all workers)",
                value=last["ocr_read"] / last["ocr_seconds"],
            )


def init_app(app: Flask, engine: Engine) -> CollectorRegistry:
    """Time and count every request of ``app`` and serve them at /metrics. Register before other hooks."""
    registry = CollectorRegistry()
    requests_total = Counter(
        "glimpse_http_requests_total",
        "HTTP requests answered, by URL rule and status",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "glimpse_http_request_duration_seconds",
        "Time to produce a response, by URL rule",
        ["method", "route"],
        registry=registry,
    )
    stages = Histogram(
        "glimpse_search_stage_duration_seconds",
        "Time spent per search stage (encode, faiss, hydrate)",
        ["stage"],
        buckets=STAGE_BUCKETS,
        registry=registry,
    )
    rejections = Counter(
        "glimpse_upload_rejections_total",
        "Uploads refused, by route and reason",
        ["route", "reason"],
        registry=registry,
    )
    registry.register(EngineCollector(engine))

    def observe_stage(name: str, seconds: float) -> None:
        stages.labels(name).observe(seconds)

    @app.before_request
    def _metrics_start():
        g.metrics_start = time.perf_counter()
        g.metrics_stage_token = set_observer(observe_stage)

    @app.after_request
    def _metrics_count(response):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in METHODS else "other"
        status = response.status_code
        requests_total.labels(method, route, str(status)).inc()
        start = g.get("metrics_start")
        if start is not None:
            latency.labels(method, route).observe(time.perf_counter() - start)
        if status in UPLOAD_ENDPOINTS.get(request.endpoint or "", ()):
            rejections.labels(route, REJECTION_REASONS[status]).inc()
        return response

    @app.teardown_request
    def _metrics_reset(_exc):
        token = g.pop("metrics_stage_token", None)
        if token is not None:
            reset_observer(token)

    def metrics():
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encoder(registry), content_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    app.extensions["glimpse_metrics"] = registry
    return registry
