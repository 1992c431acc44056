"""JSON API blueprint: search, image metadata, thumbnails and files (by id only), health, stats.

Controllers stay thin: parse parameters (web.params), call ``Engine.search``,
shape JSON (web.queries). Every error is ``{"error": …}`` (web.errors).
"""

from __future__ import annotations

import mimetypes

from flask import Blueprint, jsonify, request, send_file

from search.engine import SearchResult
from search.media.decode import ImageDecodeError
from search.media.video import content_type, is_video_path
from search.query.args import check_query_text, given
from search.query.kinds import ImageQuery, SimilarQuery
from web import auth, queries, thumbs
from web.config import app_settings, engine
from web.errors import HttpError
from web.openapi import openapi_document
from web.params import parse_moment, parse_search_params
from web.uploads import read_upload

bp = Blueprint("api", __name__, url_prefix="/api")

THUMB_MAX_AGE = 24 * 3600
FILE_MAX_AGE = 3600


def known_image(image_id: int) -> SearchResult:
    found = engine().image(image_id)
    if found is None:
        raise HttpError(404, f"no image with id {image_id}")
    return found


@bp.get("/search")
def search():
    q = (request.args.get("q") or "").strip()
    if not q:
        raise HttpError(400, "missing query: pass ?q=TEXT")
    check_query_text(q)
    params = parse_search_params(request.args)
    page = engine().search(params.text_query(q), params.filters, params.paging)
    return jsonify(queries.page_dict(page, query=q, mode=params.mode))


@bp.post("/search/image")
def search_image():
    data = read_upload(request.files)
    params = parse_search_params(request.values)
    page = engine().search(ImageQuery(data), params.filters, params.paging)
    name = request.files["image"].filename or None
    return jsonify(queries.page_dict(page, query={"kind": "image", "filename": name, "bytes": len(data)}))


@bp.get("/images/<int:image_id>/similar")
def similar(image_id: int):
    found = known_image(image_id)
    t = parse_moment(request.args, found)
    if t is not None and found.kind != "video":
        raise HttpError(400, f"t applies to a video only: {image_id} is an image")
    params = parse_search_params(request.args)
    page = engine().search(SimilarQuery(image_id, t), params.filters, params.paging)
    query: dict = {"kind": "similar", "id": image_id}
    if t is not None:
        query["t"] = t
    return jsonify(queries.page_dict(page, query=query))


@bp.get("/images/<int:image_id>")
def image(image_id: int):
    found = known_image(image_id)
    out = queries.result_dict(found)
    out.pop("score", None)
    out.pop("matched_caption", None)
    out["captions"] = engine().captions_of(image_id)
    if found.kind == "video":
        out["scenes"] = engine().video_scenes(image_id)
    return jsonify(out)


@bp.get("/images/<int:image_id>/thumb")
def thumb(image_id: int):
    raw = given(request.args.get("size"), "size") or str(thumbs.DEFAULT_SIZE)
    if raw not in {str(size) for size in thumbs.SIZES}:
        raise HttpError(400, f"size must be one of {', '.join(map(str, thumbs.SIZES))}")
    found = known_image(image_id)
    video = None
    if found.kind == "video":  # a moment's frame; without t the poster's (on an image t is ignored)
        t = parse_moment(request.args, found)
        t = t if t is not None else (found.time or 0.0)
        video = (t, (found.width or 0) * (found.height or 0))
    with engine().open_image(image_id) as opened:  # 404 unless it is still the file that was indexed
        try:
            path, etag = thumbs.thumbnail(engine().paths.thumbs, opened, int(raw), app_settings(), video)
        except ImageDecodeError as exc:
            raise HttpError(404, f"no thumbnail for image {image_id}: {exc}") from None
    return send_file(path, mimetype="image/jpeg", etag=etag, conditional=True, max_age=THUMB_MAX_AGE)


@bp.get("/images/<int:image_id>/file")
def file(image_id: int):
    opened = engine().open_image(image_id)  # 404 unless it is still the file that was indexed
    try:
        if is_video_path(opened.name):  # a <video> refuses what it cannot tell is a video
            mimetype = content_type(opened.name)
        else:
            mimetype = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
        resp = send_file(
            opened.file,
            mimetype=mimetype,
            download_name=opened.name,
            etag=opened.etag,
            last_modified=opened.mtime,
            max_age=FILE_MAX_AGE,
            conditional=False,
        )
        # send_file cannot know a file object's length: give it, so ranges and Content-Length work.
        resp.content_length = opened.size
        resp.call_on_close(opened.close)
        return resp.make_conditional(request, accept_ranges=True, complete_length=opened.size)
    except BaseException:
        opened.close()
        raise


@bp.get("/health")
def health():
    """Cheap liveness: no model call, just whether an index is published. Open to all, so behind a login
    a request without one learns only that the server is up, not how many photos it holds."""
    found = engine().health()
    return jsonify(found if auth.logged_in() else {"status": found["status"]})


@bp.get("/stats")
def stats():
    return jsonify(engine().stats())


@bp.get("/openapi.json")
def openapi():
    return jsonify(openapi_document())
