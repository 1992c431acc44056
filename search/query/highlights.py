"""What matched, for the results of one page: the caption or file name, with its matched words."""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.query.keywords import explain
from search.query.results import SearchResult

if TYPE_CHECKING:
    from search.query.plan import QueryPlan
    from search.store.database import Store


def add_highlights(store: Store, results: list[SearchResult], plan: QueryPlan) -> None:
    """Fill ``matched_text`` and ``matched_spans``: a caption match shows its caption; a keyword match the
    caption line, file name or folder its words matched in (FTS5's highlight over the page's rows only)."""
    for r in results:
        if "caption" in r.matched and r.matched_caption:
            r.matched_text = r.matched_caption
    ids = [r.id for r in results if "keywords" in r.matched]
    match = plan.keywords.any_positive if plan.keywords is not None else None
    if not ids or match is None:
        return
    marked = store.keyword_highlights(match, ids)
    for r in results:
        if r.id in marked and (shown := explain(r.path, *marked[r.id])) is not None:
            r.matched_text, r.matched_spans = shown
