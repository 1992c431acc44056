"""clip-retrieval back-end compatibility: ``/knn-service``, ``/indices-list``, ``/metadata``.

So clip-retrieval's ``ClipClient`` and its front end work against Glimpse
unchanged. Flags Glimpse does not offer (mclip, safety and violence models,
aesthetic scoring) are accepted and ignored; ``deduplicate`` is honoured the
way clip-retrieval does it (near-identical vectors, cosine >= 0.94, keep the
best-ranked). ``image_url`` makes the server fetch a URL, so it is refused
unless the operator turns on GLIMPSE_ALLOW_IMAGE_URL.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
from flask import Blueprint, current_app, jsonify, request, url_for

from search.engine import MAX_K, Engine, Filters, SearchResult
from search.query.args import check_query_text
from search.query.kinds import ImageQuery, Paging, Query, TextQuery, VectorQuery
from web.config import app_settings, engine
from web.errors import HttpError
from web.uploads import check_image_bytes, decode_base64_image, limit

bp = Blueprint("clip_compat", __name__)

INDICE_NAME = "glimpse"
DEDUP_THRESHOLD = 0.94
FETCH_TIMEOUT = 10


def json_body() -> dict:
    """clip-retrieval parses with get_json(force=True): the Content-Type is not trusted either way.

    A deeply nested body ("[[[[…") makes the parser raise RecursionError: as bad a body as any other.
    """
    data = request.get_data(cache=False)
    cap = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and cap is not None and len(data) >= cap:
        # No length given (chunked, under a server that sets wsgi.input_terminated): werkzeug stopped
        # reading at the cap, so this is the start of a longer body, not JSON with a typo.
        raise HttpError(413, f"request body too large: the limit is {cap} bytes")
    try:
        body = json.loads(data or b"null")
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HttpError(400, "invalid JSON: the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the request body must be a JSON object")
    return body


def check_indice(body: dict) -> None:
    name = body.get("indice_name")
    if name not in (None, "", INDICE_NAME):
        raise HttpError(400, f"unknown indice_name {name!r}: this server has {INDICE_NAME!r}")


def _count(body: dict, name: str, default: int) -> int:
    value = body.get(name, default)
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        try:  # some front ends send form values as strings
            value = int(value)
        except ValueError:  # more digits than int() parses
            pass
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HttpError(400, f"{name} must be a positive integer")
    return min(value, MAX_K)


def fetch_image_url(url) -> bytes:
    if not app_settings()["GLIMPSE_ALLOW_IMAGE_URL"]:
        raise HttpError(
            400,
            "image_url is disabled on this server (GLIMPSE_ALLOW_IMAGE_URL); send the image "
            "as base64 in 'image' instead",
        )
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise HttpError(400, "image_url must be an http(s) URL")
    req = urllib.request.Request(url, headers={"User-Agent": "Glimpse"})
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT) as resp:
            data = resp.read(limit() + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise HttpError(400, f"could not fetch image_url: {exc}") from None
    return check_image_bytes(data)


def knn_query(eng: Engine, body: dict) -> Query:
    """Same precedence as clip-retrieval: text, then image, then image_url, then embedding_input."""
    if body.get("text"):
        if not isinstance(body["text"], str):
            raise HttpError(400, "text must be a string")
        check_query_text(body["text"], "text")
        return TextQuery(body["text"])  # every term text: never a server path
    if body.get("image"):
        return ImageQuery(decode_base64_image(body["image"]))
    if body.get("image_url"):
        return ImageQuery(fetch_image_url(body["image_url"]))
    if body.get("embedding_input") is not None:
        try:
            with np.errstate(over="ignore"):  # a number past float32 becomes inf, refused below
                vec = np.asarray(body["embedding_input"], dtype=np.float32).reshape(-1)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too big for a float
            raise HttpError(400, "embedding_input must be a list of numbers") from None
        if vec.shape[0] != eng.encoder.dim or not np.all(np.isfinite(vec)):
            raise HttpError(400, f"embedding_input must be {eng.encoder.dim} finite numbers")
        return VectorQuery(vec)
    raise HttpError(400, "must fill one of text, image, image_url and embedding_input")


def deduplicate(eng: Engine, results: list[SearchResult]) -> list[SearchResult]:
    """Drop results whose vector is near-identical (cosine >= 0.94) to a better-ranked one."""
    vecs = eng.vectors_of(r.id for r in results)
    keep: list[SearchResult] = []
    kept: list[np.ndarray] = []
    for result in results:
        vec = vecs.get(result.id)
        if vec is not None:
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
            if kept and float(np.max(np.stack(kept) @ vec)) >= DEDUP_THRESHOLD:
                continue
            kept.append(vec)
        keep.append(result)
    return keep


def file_url(image_id: int) -> str:
    return url_for("api.file", image_id=image_id, _external=True)


def metadata(result: SearchResult) -> dict:
    """What clip-retrieval shows of a result; a video's moment adds its ``time`` (seconds) to the video's url."""
    out: dict = {"url": file_url(result.id), "image_path": result.path, "caption": result.caption}
    if result.kind == "video":
        out["time"] = result.time
    return out


@bp.post("/knn-service")
def knn_service():
    body = json_body()
    check_indice(body)
    modality = body.get("modality") or "image"
    if modality not in ("image", "text"):
        raise HttpError(400, "modality must be 'image' or 'text'")
    num_images = _count(body, "num_images", 40)
    num_ids = max(_count(body, "num_result_ids", num_images), num_images)
    eng = engine()
    if modality == "text":
        # Caption vectors; Glimpse answers this for text queries only.
        if not (isinstance(body.get("text"), str) and body["text"].strip()):
            raise HttpError(
                400,
                "modality 'text' (caption search) needs a text query here; use modality 'image' "
                "for image or embedding queries",
            )
        check_query_text(body["text"], "text")
        query: Query = TextQuery(body["text"], mode="captions")
    else:
        query = knn_query(eng, body)
    results = eng.search(query, Filters(), Paging(k=num_ids)).results
    if body.get("deduplicate"):
        results = deduplicate(eng, results)
    out = []
    for rank, result in enumerate(results):
        item = {"id": result.id, "similarity": result.score}
        if rank < num_images:
            item.update(metadata(result))
        out.append(item)
    return jsonify(out)


@bp.get("/indices-list")
def indices_list():
    return jsonify([INDICE_NAME])


@bp.post("/metadata")
def metadata_service():
    body = json_body()
    check_indice(body)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise HttpError(400, "ids must be a list of integers")
    if len(ids) > MAX_K:
        raise HttpError(400, f"at most {MAX_K} ids per request")
    found = engine().images(ids)  # one batched read; ids that name no indexed image are left out
    return jsonify([{"id": i, "metadata": metadata(found[i]) if i in found else {}} for i in ids])


def add_cors_headers(response):
    """Let a configured origin (clip-retrieval's hosted front end) call these endpoints from a browser."""
    origin = request.headers.get("Origin")
    allowed = app_settings()["GLIMPSE_CORS_ORIGINS"] or ()
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"  # a login goes too
        response.vary.add("Origin")
    return response


bp.after_request(add_cors_headers)
