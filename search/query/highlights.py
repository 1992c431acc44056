"""What matched, for the results of one page: the caption or file name with its matched words, and the
text read in the image (an excerpt around its first matched word)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from search.query.image_text import any_text_word
from search.query.keywords import explain, marked_spans
from search.query.results import SearchResult

if TYPE_CHECKING:
    from search.query.plan import QueryPlan
    from search.store.database import Store

TEXT_CHARS = 500  # the most of an image's text a result carries (a scanned page reads thousands)
ELLIPSIS = "…"
_SNAP = 40  # how far a cut looks for a space (CJK text has none: cut where the size says)
_SPACE = re.compile(r"\s+")


def add_highlights(store: Store, results: list[SearchResult], plan: QueryPlan) -> None:
    """Fill ``matched_text`` and ``matched_spans``: a caption match shows its caption; a keyword match the
    caption line, file name or folder its words matched in (FTS5's highlight over the page's rows only);
    and ``text``/``text_spans`` of every result with text read in it (one read for the page)."""
    for r in results:
        if "caption" in r.matched and r.matched_caption:
            r.matched_text = r.matched_caption
    add_text(store, results, plan)
    ids = [r.id for r in results if "keywords" in r.matched]
    match = plan.keywords.any_positive if plan.keywords is not None else None
    if not ids or match is None:
        return
    marked = store.keyword_highlights(match, ids)
    for r in results:
        if r.id in marked and (shown := explain(r.path, *marked[r.id])) is not None:
            r.matched_text, r.matched_spans = shown


def add_text(store: Store, results: list[SearchResult], plan: QueryPlan | None) -> None:
    """``text`` and ``text_spans``: the text read in each result's image, the query's words marked (the
    same FTS5 query that found them, so prefixes and folded accents are marked as they matched)."""
    if not results:
        return
    texts = store.page_texts([r.id for r in results], any_text_word(plan) if plan is not None else None)
    for r in results:
        if r.id in texts:
            plain, spans = marked_spans(texts[r.id])
            r.text, r.text_spans = excerpt(plain, spans)


def excerpt(text: str, spans: list[list[int]], size: int = TEXT_CHARS) -> tuple[str, list[list[int]]]:
    """At most about ``size`` characters of ``text``, around its first span when that lies further in,
    cut at word boundaries (a space within a few characters) with an ellipsis; the spans moved with it."""
    if len(text) <= size:
        return text, spans
    start = 0
    if spans and spans[0][1] > size - size // 4:
        first = spans[0][0]
        start = max(0, first - size // 4)
        space = _SPACE.search(text, start, min(first, start + _SNAP))
        if space is not None:
            start = space.end()
    end = min(len(text), start + size)
    if end < len(text):
        spaces = [m.start() for m in _SPACE.finditer(text, max(start + 1, end - _SNAP), end + 1)]
        if spaces:
            end = spaces[-1]
    head = ELLIPSIS if start > 0 else ""
    tail = ELLIPSIS if end < len(text) else ""
    shift = len(head) - start
    kept = [[a + shift, b + shift] for a, b in spans if a >= start and b <= end]
    return head + text[start:end].rstrip() + tail, kept
