"""Hybrid text search: the vision ranking fused with the keyword (FTS5) ranking.

Modes (``TextQuery.mode``): ``auto`` fuses both when the keyword index matches any word of the query and
is the vision ranking alone otherwise; ``keywords`` is the keyword ranking alone. Fusion is an even
score blend (:func:`fuse`, ``blend``, alpha 0.5): on held-out captions it beat reciprocal rank fusion
(k = 60) and the other blends in recall@10 and MRR on two samples (BENCHMARKS.md, "Hybrid search").

Both candidate lists go through the engine's row filtering (``Engine._hydrate``: deleted rows, folder,
dates, min_score) before they are ranked, so filters and paging mean the same as in vision search. A
result's ``score`` stays its cosine similarity (None in ``keywords`` mode), so ``min_score`` keeps its
meaning. Negative terms (``- dog``) subtract from the vision vector as before, and an image whose
keywords match a negative term loses its keyword match and goes below every image that does not.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from search.errors import EngineError
from search.query.keywords import KeywordPlan, explain, keyword_plan
from search.query.kinds import Filters, TextQuery, parse_query
from search.query.results import SearchResult

if TYPE_CHECKING:
    from search.engine import Engine
    from search.store.database import Store

RRF_K = 60
# The fusion every hybrid query uses (bench/hybrid_fusion.py measured the others).
FUSION, ALPHA = "blend", 0.5
# Candidates taken from each ranking before fusing (at least; a deep page takes more).
FUSION_POOL = 100


def fuse(
    vision: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float]],
    method: str = FUSION,
    alpha: float = ALPHA,
) -> list[int]:
    """Ids best first. ``rrf``: sum of 1/(RRF_K + rank) over the lists holding the id. ``blend``:
    alpha * cosine min-max scaled over the vision list + (1 - alpha) * bm25 / the best bm25 (absent: 0).
    Ties go to the id both lists hold, then to the vision order."""
    fused: dict[int, float] = defaultdict(float)
    if method == "rrf":
        for ranking in (vision, keyword):
            for rank, (i, _) in enumerate(ranking, start=1):
                fused[i] += 1.0 / (RRF_K + rank)
    elif method == "blend":
        if vision:
            lo, hi = min(s for _, s in vision), max(s for _, s in vision)
            for i, s in vision:
                fused[i] += alpha * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        best = max((s for _, s in keyword), default=0.0)
        for i, s in keyword:
            fused[i] += (1.0 - alpha) * (s / best if best > 0 else 1.0)
    else:
        raise ValueError(f"unknown fusion method {method!r}")
    order: dict[int, int] = {}
    for n, i in enumerate([i for i, _ in vision] + [i for i, _ in keyword]):
        order.setdefault(i, n)
    both = {i for i, _ in vision} & {i for i, _ in keyword}
    return sorted(fused, key=lambda i: (-fused[i], i not in both, order[i]))


def keyword_ranking(store: Store, plan: KeywordPlan, limit: int) -> list[tuple[int, float]]:
    """Weighted sum of each positive term's bm25, best first (a term's weight scales its keywords too)."""
    scores: dict[int, float] = defaultdict(float)
    for match, weight in plan.positive:
        for image_id, score in store.keyword_ranking(match, limit):
            scores[image_id] += weight * score
    return sorted(scores.items(), key=lambda p: -p[1])[:limit]


def hybrid_results(engine: Engine, query: TextQuery, want: int, filters: Filters, pool: int) -> list[SearchResult]:
    """Every result up to ``want`` (or the date-order ``pool``) for an ``auto`` or ``keywords`` query."""
    try:
        terms = parse_query(query.text or "", allow_files=query.allow_files)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    plan = keyword_plan(terms)
    shown = pool if filters.order == "date" else want  # results returned (date order re-sorts a pool)
    size = max(pool, 2 * want, FUSION_POOL)
    keyword = keyword_ranking(engine.store, plan, size * 4 if filters.active() or filters.min_score else size)
    if query.mode == "keywords":
        negative = engine.store.keyword_matches(plan.negative, [i for i, _ in keyword]) if plan.negative else set()
        no_score = dataclasses.replace(filters, min_score=None)  # bm25 is no cosine: min_score cannot apply
        results = engine._hydrate([(i, None) for i, _ in keyword if i not in negative], no_score)  # type: ignore[misc]
        return _finish(results[:shown], {r.id: ["keywords"] for r in results}, filters)
    if not keyword:  # auto, and no word of the query is in the keyword index: vision alone
        # Only as many as shown: the fusion pool's 100 rows cost 100 random row reads (and at 10M images the
        # re-rank of 500 candidates), ~90 ms more per query than a vision query at 10M.
        _, vision = engine.vision_results(query, shown, filters)
        return _finish(vision, {r.id: ["image"] for r in vision}, filters)
    vec, vision = engine.vision_results(query, size, filters)
    seen = {r.id for r in vision}
    negative = (
        engine.store.keyword_matches(plan.negative, [i for i, _ in keyword] + list(seen)) if plan.negative else set()
    )
    rest = [i for i, _ in keyword if i not in seen and i not in negative]
    cosines = engine.vectors_of(rest)
    extra = engine._hydrate([(i, float(cosines[i] @ vec)) for i in rest if i in cosines], filters)
    by_id = {r.id: r for r in (*vision, *extra)}
    kw_list = [(i, s) for i, s in keyword if i in by_id and i not in negative]
    ranked = fuse([(r.id, r.score or 0.0) for r in vision], kw_list)
    ranked = [i for i in ranked if i not in negative] + [i for i in ranked if i in negative]  # demoted, kept in order
    matched: dict[int, list[str]] = defaultdict(list)
    for r in vision:
        matched[r.id].append("image")
    for i, _ in kw_list:
        matched[i].append("keywords")
    results = [by_id[i] for i in ranked]
    return _finish(results[:shown], matched, filters)


def _finish(results: list[SearchResult], matched: dict[int, list[str]], filters: Filters) -> list[SearchResult]:
    for r in results:
        r.matched = matched.get(r.id, [])
    if filters.order == "date":
        results.sort(key=lambda r: r.date or "", reverse=True)
    return results


def add_highlights(store: Store, results: list[SearchResult], query: TextQuery) -> None:
    """Say what matched for the results of one page: the caption or file name with its matched words."""
    for r in results:
        if "caption" in r.matched and r.matched_caption:
            r.matched_text = r.matched_caption
    ids = [r.id for r in results if "keywords" in r.matched]
    if not ids:
        return
    try:
        match = keyword_plan(parse_query(query.text, allow_files=query.allow_files)).any_positive
    except ValueError:
        return
    if match is None:
        return
    marked = store.keyword_highlights(match, ids)
    for r in results:
        if r.id in marked and (shown := explain(r.path, *marked[r.id])) is not None:
            r.matched_text, r.matched_spans = shown
