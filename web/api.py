"""JSON API blueprint: search, image metadata, thumbnails and files (by id only), health, stats.

Controllers stay thin: parse parameters (web.params), call the engine
(web.queries), shape JSON. Every error is ``{"error": …}`` (web.errors).
"""

from __future__ import annotations

import mimetypes
import os

from flask import Blueprint, current_app, jsonify, request, send_file

from search.engine import Engine, SearchResult
from search.images import ImageDecodeError

from web import queries, thumbs
from web.errors import HttpError
from web.openapi import openapi_document
from web.params import parse_search_params
from web.uploads import read_upload

bp = Blueprint("api", __name__, url_prefix="/api")

THUMB_MAX_AGE = 24 * 3600
FILE_MAX_AGE = 3600


def engine() -> Engine:
    return current_app.extensions["glimpse_engine"]


def known_image(image_id: int) -> SearchResult:
    found = engine().image(image_id)
    if found is None:
        raise HttpError(404, f"no image with id {image_id}")
    return found


def existing_file(image_id: int) -> str:
    known_image(image_id)
    path = engine().image_path(image_id)
    if not path or not os.path.isfile(path):
        raise HttpError(404, f"image {image_id} is no longer on disk (moved, deleted or its drive unmounted)")
    return path


@bp.get("/search")
def search():
    q = (request.args.get("q") or "").strip()
    if not q:
        raise HttpError(400, "missing query: pass ?q=TEXT")
    params = parse_search_params(request.args)
    page = queries.search_text(engine(), q, params)
    return jsonify(queries.page_dict(page, query=q, mode=params.mode))


@bp.post("/search/image")
def search_image():
    data = read_upload(request.files)
    params = parse_search_params(request.values)
    page = queries.search_image(engine(), data, params)
    name = request.files["image"].filename or None
    return jsonify(queries.page_dict(page, query={"kind": "image", "filename": name, "bytes": len(data)}))


@bp.get("/images/<int:image_id>/similar")
def similar(image_id: int):
    known_image(image_id)
    params = parse_search_params(request.args)
    page = queries.search_similar(engine(), image_id, params)
    return jsonify(queries.page_dict(page, query={"kind": "similar", "id": image_id}))


@bp.get("/images/<int:image_id>")
def image(image_id: int):
    found = known_image(image_id)
    out = queries.result_dict(found)
    out.pop("score", None)
    out.pop("matched_caption", None)
    out["captions"] = engine().captions_of(image_id)
    return jsonify(out)


@bp.get("/images/<int:image_id>/thumb")
def thumb(image_id: int):
    raw = request.args.get("size") or str(thumbs.DEFAULT_SIZE)
    if raw not in {str(size) for size in thumbs.SIZES}:
        raise HttpError(400, f"size must be one of {', '.join(map(str, thumbs.SIZES))}")
    source = existing_file(image_id)
    try:
        path, etag = thumbs.thumbnail(engine().paths.thumbs, image_id, source, int(raw))
    except FileNotFoundError:
        raise HttpError(404, f"image {image_id} is no longer on disk") from None
    except ImageDecodeError as exc:
        raise HttpError(404, f"no thumbnail for image {image_id}: {exc}") from None
    return send_file(path, mimetype="image/jpeg", etag=etag, conditional=True, max_age=THUMB_MAX_AGE)


@bp.get("/images/<int:image_id>/file")
def file(image_id: int):
    path = existing_file(image_id)
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return send_file(path, mimetype=mimetype, conditional=True, max_age=FILE_MAX_AGE,
                     download_name=os.path.basename(path))


@bp.get("/health")
def health():
    """Cheap liveness: no model call, just whether an index is published."""
    return jsonify(engine().health())


@bp.get("/stats")
def stats():
    return jsonify(engine().stats())


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
