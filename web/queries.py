"""Run a search for a web request: paging with a has-more flag, and result URLs.

The engine treats a query term naming an existing file as an image query; that
is right for the CLI but over HTTP it would let a client probe and use files
on the server. Here every term of a combined query is text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from flask import url_for

from search.engine import MAX_K, Engine, EngineError, SearchResult
from search.query import parse_query

from web.params import SearchParams


@dataclass
class Page:
    results: list[SearchResult]
    k: int
    page: int
    has_more: bool


def text_query_vector(engine: Engine, query: str) -> np.ndarray:
    """Weighted sum of text terms ("2:beach + sunset - people"); never a server path."""
    try:
        terms = parse_query(query or "")
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    total = np.zeros(engine.encoder.dim, np.float32)
    for term in terms:
        total += term.weight * engine.text_vector(term.text)
    norm = float(np.linalg.norm(total))
    if norm < 1e-9:
        raise EngineError("the query terms cancel out")
    return total / norm


def paged(search: Callable[..., list[SearchResult]], params: SearchParams) -> Page:
    """Ask for one result past the page so the client knows whether another page exists."""
    k, page = params.k, params.page
    want = (page + 1) * k + 1
    if want <= MAX_K:
        found = search(k=want, page=0, filters=params.filters)
        return Page(found[page * k : (page + 1) * k], k, page, len(found) > (page + 1) * k)
    found = search(k=k, page=page, filters=params.filters)
    return Page(found, k, page, False)


def search_text(engine: Engine, query: str, params: SearchParams) -> Page:
    if params.mode == "captions":
        if not (query or "").strip():
            raise EngineError("empty query")
        return paged(lambda **kw: engine.search_captions(query, **kw), params)
    vec = text_query_vector(engine, query)
    return paged(lambda **kw: engine.search_vector(vec, **kw), params)


def search_image(engine: Engine, data: bytes, params: SearchParams) -> Page:
    vec = engine.image_vector(data)
    return paged(lambda **kw: engine.search_vector(vec, **kw), params)


def search_similar(engine: Engine, image_id: int, params: SearchParams) -> Page:
    return paged(lambda **kw: engine.similar(image_id, **kw), params)


def image_urls(image_id: int) -> dict:
    return {
        "thumb_url": url_for("api.thumb", image_id=image_id),
        "file_url": url_for("api.file", image_id=image_id),
        "similar_url": url_for("api.similar", image_id=image_id),
        "page_url": url_for("pages.image_page", image_id=image_id),
    }


def result_dict(result: SearchResult) -> dict:
    return {**result.to_dict(), **image_urls(result.id)}


def page_dict(page: Page, **extra) -> dict:
    return {**extra, "k": page.k, "page": page.page, "has_more": page.has_more,
            "results": [result_dict(r) for r in page.results]}
