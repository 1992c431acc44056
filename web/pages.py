"""Server-rendered pages (Jinja, autoescaped) and the HTML fragments the page script appends.

Results are rendered by one template macro whether they come with the page
(bookmarkable ``/?q=…``), from "load more", or from an upload, so there is a
single place where captions and paths are escaped.
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, current_app, jsonify, render_template, request, url_for
from markupsafe import Markup, escape

from search.engine import Page, SearchResult
from search.errors import GlimpseError
from search.query.args import check_query_text
from search.query.kinds import ImageQuery, SimilarQuery
from web import queries, thumbs
from web.config import app_settings, engine, max_upload_bytes
from web.errors import HttpError, page_error
from web.highlight import highlight
from web.params import SearchParams, parse_moment, parse_search_params
from web.uploads import read_upload

bp = Blueprint("pages", __name__)


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def break_after_slashes(path: str) -> Markup:
    """The path escaped, with a line-break opportunity after each separator, so a long path wraps
    between folder names rather than inside one."""
    return Markup("/<wbr>").join(escape(part) for part in path.split("/"))


def thumb_srcset(thumb_url: str) -> str:
    """Every thumbnail size with its width, so the browser picks the one that fits the card at its pixel ratio."""
    join = "&" if "?" in thumb_url else "?"  # a video's moment: thumb?t=…
    return ", ".join(f"{thumb_url}{join}size={size} {size}w" for size in thumbs.SIZES)


def register_filters(app: Flask) -> None:
    app.add_template_filter(human_size, "human_size")
    app.add_template_filter(break_after_slashes, "break_after_slashes")
    app.add_template_global(thumb_srcset, "thumb_srcset")
    app.add_template_filter(os.path.basename, "basename")
    app.add_template_filter(highlight, "highlight")
    app.add_template_global(queries.image_urls, "image_urls")


def _like_id(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    try:
        if raw.isascii() and raw.isdigit():  # isdigit() alone passes "²", which int() refuses
            return int(raw)
    except ValueError:  # more digits than int() parses
        pass
    raise HttpError(400, "like must be an image id")


def _search(q: str, like: int | None, params: SearchParams, t: float | None = None) -> Page | None:
    """The page's one search dispatch: text (``q``) first, else "more like this" (``like``, from a video's
    moment ``t``), else none."""
    if q:
        check_query_text(q)
        return engine().search(params.text_query(q), params.filters, params.paging)
    if like is not None:
        return engine().search(SimilarQuery(like, t), params.filters, params.paging)
    return None


def _like_moment(like: int | None, source: SearchResult | None) -> float | None:
    """``t`` of "more like this" from a video's moment (ignored for an image)."""
    if like is None or source is None or source.kind != "video":
        return None
    return parse_moment(request.args, source)


def _moments(raw: str | None, duration: float | None) -> list[float]:
    """The other moments a result showed (``m=12.5,30``), for the player's timeline: at most five times
    within the video; anything else in the list is dropped."""
    out = []
    for part in (raw or "").split(",")[:5]:
        try:
            t = float(part)
        except ValueError:
            continue
        if 0.0 <= t <= (duration or 0.0) + 1.0:
            out.append(t)
    return out


SCENES_SHOWN = 24  # the scene strip under a video: a long video's kept frames, spread evenly


def _spread(times: list[float], most: int = SCENES_SHOWN) -> list[float]:
    """At most ``most`` of ``times``, evenly spread over them, the first and the last included."""
    if len(times) <= most:
        return times
    return [times[round(i * (len(times) - 1) / (most - 1))] for i in range(most)]


def _cards_json(page: Page, params: SearchParams, next_url: str | None) -> dict:
    html = render_template("_cards.html", page=page, keep=params.filter_args())
    return {
        "html": html,
        "count": len(page.results),
        "page": page.page,
        "has_more": page.has_more,
        "next_url": next_url if page.has_more else None,
    }


def _stats() -> dict:
    try:
        return engine().stats(failed_limit=1)
    except Exception:  # the page must render even when the store is unreadable
        current_app.logger.exception("stats failed")
        return {}


@bp.get("/")
def index():
    q = (request.args.get("q") or "").strip()
    error, status, page, source = None, 200, None, None
    like_t: float | None = None
    params = SearchParams()
    like = None
    try:
        params = parse_search_params(request.args, blank_ok=True)
        like = None if q else _like_id(request.args.get("like"))
        if like is not None:
            source = engine().image(like)
            if source is None:
                raise HttpError(404, f"no image with id {like}")
        like_t = _like_moment(like, source)
        page = _search(q, like, params, like_t)
    except (HttpError, GlimpseError) as exc:
        error, status = page_error(exc)
    keep = params.filter_args()
    more_url = fragment_url = None
    if page is not None and page.has_more:
        more_url = url_for("pages.index", q=q or None, like=like, t=like_t, page=page.page + 1, **keep)
        fragment_url = url_for("pages.fragment_results", q=q or None, like=like, t=like_t, page=page.page + 1, **keep)
    stats = _stats()
    return render_template(
        "index.html",
        q=q,
        like=like,
        like_t=like_t,
        source=source,
        page=page,
        params=params,
        keep=keep,
        error=error,
        more_url=more_url,
        fragment_url=fragment_url,
        stats=stats,
        roots=[r["path"] for r in stats.get("roots", [])],
        max_upload=max_upload_bytes(app_settings()),
    ), status


@bp.get("/fragments/results")
def fragment_results():
    """Next page of a text or "more like this" search, as card HTML for the page script."""
    q = (request.args.get("q") or "").strip()
    params = parse_search_params(request.args, blank_ok=True)
    like = None if q else _like_id(request.args.get("like"))
    like_t = _like_moment(like, engine().image(like) if like is not None else None)
    page = _search(q, like, params, like_t)
    if page is None:
        raise HttpError(400, "missing query")
    keep = params.filter_args()
    next_url = url_for("pages.fragment_results", q=q or None, like=like, t=like_t, page=page.page + 1, **keep)
    return jsonify(_cards_json(page, params, next_url))


@bp.post("/fragments/image")
def fragment_image():
    """Results for an uploaded (picked, dropped or pasted) image, as card HTML."""
    data = read_upload(request.files)
    params = parse_search_params(request.form, blank_ok=True)
    page = engine().search(ImageQuery(data), params.filters, params.paging)
    return jsonify(_cards_json(page, params, None))


@bp.get("/image/<int:image_id>")
def image_page(image_id: int):
    found: SearchResult | None = engine().image(image_id)
    if found is None:
        raise HttpError(404, f"no image with id {image_id}")
    engine().open_image(image_id).close()  # 404 unless the file is still the one that was indexed
    q = (request.args.get("q") or "").strip()
    try:  # the query's words marked in the image's text, and their lines outlined on the picture
        check_query_text(q)
        text = engine().image_text(image_id, q or None)
    except GlimpseError:  # a query the parser refuses: the text as read, every line outlined
        q, text = "", engine().image_text(image_id)
    moment = moments = scenes = None
    if found.kind == "video":  # the player starts at the moment a result showed, its other moments marked
        moment = parse_moment(request.args, found)
        moment = moment if moment is not None else (found.time or 0.0)
        moments = _moments(request.args.get("m"), found.duration)
        scenes = _spread(engine().video_scenes(image_id))  # what is in it, also when no search led here
    return render_template(
        "image.html",
        image=found,
        captions=engine().captions_of(image_id),
        text=text,
        q=q,
        moment=moment,
        moments=moments,
        scenes=scenes,
        from_search="t" in request.args,  # a result's moment: its timeline of matching moments
    )
