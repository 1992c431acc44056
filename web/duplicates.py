"""Near-duplicates over HTTP: ``GET /api/duplicates`` (JSON) and the Duplicates page, paged by group.

Read-only like the finder itself (search.vectors.duplicates): the page shows each group so a person can
decide what to delete; Glimpse deletes nothing.
"""

from __future__ import annotations

import math

from flask import Blueprint, jsonify, render_template, request

from search.errors import GlimpseError
from search.query.args import given
from search.vectors.duplicate_groups import Progress
from search.vectors.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, Duplicates, max_distance
from web import queries
from web.config import engine
from web.errors import HttpError, page_error

bp = Blueprint("duplicates", __name__)

GROUPS_PER_PAGE = 20


def parse_threshold(args, blank_ok: bool = False) -> float:
    raw = given(args.get("threshold"), "threshold", blank_ok)
    if raw is None:
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, "threshold must be a number in (0, 1]") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise HttpError(400, "threshold must be a number in (0, 1]")
    return value


def parse_page(args, blank_ok: bool = False) -> int:
    raw = given(args.get("page"), "page", blank_ok) or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise HttpError(400, "page must be an integer >= 0")
    return int(raw)


def _page_of_groups(args) -> tuple[float, int, Duplicates, list[DuplicateGroup], bool]:
    threshold, page = parse_threshold(args), parse_page(args)
    found = engine().duplicates(threshold)
    return threshold, page, found, *_groups_on(found, page)


def _groups_on(found: Duplicates, page: int) -> tuple[list[DuplicateGroup], bool]:
    """The groups of page ``page``, and whether another page follows."""
    start = page * GROUPS_PER_PAGE
    return found.groups[start : start + GROUPS_PER_PAGE], len(found.groups) > start + GROUPS_PER_PAGE


@bp.get("/api/duplicates")
def api_duplicates():
    threshold, page, found, groups, has_more = _page_of_groups(request.args)
    return jsonify(
        {
            "threshold": threshold,
            "max_distance": max_distance(),
            "without_print": found.without_print,
            "page": page,
            "has_more": has_more,
            "groups": [
                {**group, "images": [{**image, **queries.image_urls(image["id"])} for image in group["images"]]}
                for group in (g.to_dict() for g in groups)
            ],
        }
    )


# How long the page waits for a pass before it shows how far the pass has got (and asks again).
PAGE_WAIT_S = 2.0
REFRESH_S = 2


@bp.get("/duplicates")
def page():
    error, status = None, 200
    threshold, number, has_more = DEFAULT_THRESHOLD, 0, False
    groups: list[DuplicateGroup] = []
    without_print = 0
    progress: Progress | None = None
    try:
        threshold, number = parse_threshold(request.args, True), parse_page(request.args, True)
        found = engine().duplicates_or_progress(threshold, PAGE_WAIT_S)
        if isinstance(found, Progress):  # a large collection: say how far the pass has got, and ask again
            progress = found
        else:
            groups, has_more = _groups_on(found, number)
            without_print = found.without_print
    except (HttpError, GlimpseError) as exc:
        error, status = page_error(exc)
    return render_template(
        "duplicates.html",
        threshold=threshold,
        number=number,
        groups=groups,
        has_more=has_more,
        without_print=without_print,
        first=number * GROUPS_PER_PAGE + 1,
        error=error,
        progress=progress,
        refresh_s=REFRESH_S,
    ), status
