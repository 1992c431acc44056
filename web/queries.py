"""Result URLs and the JSON shape of a page of results, shared by the API and the pages."""

from __future__ import annotations

from flask import url_for

from search.engine import Page, SearchResult


def image_urls(image_id: int) -> dict:
    return {
        "thumb_url": url_for("api.thumb", image_id=image_id),
        "file_url": url_for("api.file", image_id=image_id),
        "similar_url": url_for("api.similar", image_id=image_id),
        "page_url": url_for("pages.image_page", image_id=image_id),
    }


def result_dict(result: SearchResult) -> dict:
    out = {**result.to_dict(), **image_urls(result.id)}
    if result.kind == "video" and result.time is not None:  # the moment's frame, and more like it
        out["thumb_url"] = url_for("api.thumb", image_id=result.id, t=result.time)
        out["similar_url"] = url_for("api.similar", image_id=result.id, t=result.time)
    return out


def page_dict(page: Page, **extra) -> dict:
    return {
        **extra,
        "k": page.k,
        "page": page.page,
        "has_more": page.has_more,
        "floor": page.floor,
        "results": [result_dict(r) for r in page.results],
    }
