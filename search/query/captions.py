"""Text against caption vectors (``mode=captions``): each image once, with its best caption."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from search.query.cache import query_key
from search.query.kinds import Filters, TextQuery
from search.query.results import SearchResult
from search.stages import stage

if TYPE_CHECKING:
    from search.engine import Engine


def caption_results(engine: Engine, text: str, want: int, filters: Filters) -> list[SearchResult]:
    """Text against caption vectors; each image once, with its best caption."""
    live = engine._live()
    if live.captions is None or live.captions.ntotal == 0:
        return []
    allowed = engine._filter_ids(live, filters)
    if allowed is not None and len(allowed) == 0:
        return []
    vkey = ("vector", query_key(TextQuery(text, mode="captions")))
    vec = engine.cache.get_or_make(live.version, vkey, lambda: engine._text_vector(text))
    engine._check_dim(live, vec)
    fetch = min(live.captions.ntotal, max(want * 4, 50))
    while True:
        with stage("faiss"):
            scores, ids = live.search_captions(vec[None, :].astype(np.float32), fetch)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        caps = engine.store.captions_by_ids([i for i, _ in pairs])
        best: dict[int, tuple[float, str]] = {}
        for cid, score in pairs:
            if cid in caps:
                image_id, caption = caps[cid]
                if image_id not in best:
                    best[image_id] = (score, caption)
        results = engine._hydrate([(iid, s) for iid, (s, _) in best.items()], filters)
        for r in results:
            r.matched_caption = best[r.id][1]
            r.caption = r.matched_caption
        if len(results) >= want or fetch >= live.captions.ntotal:
            break
        fetch = min(live.captions.ntotal, fetch * 4)
    if filters.order == "date":
        results.sort(key=lambda r: r.date or "", reverse=True)
    return results
