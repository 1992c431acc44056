"""The one query path: plan → retrievers → fusion → the page, hydrated once.

::

    plan_query (parse once, one live snapshot)
      → retrievers (vision, keywords, captions: search.query.retrievers)
      → fusion (one ranking and how much of it is final: search.query.fusion)
      → more from the retrievers until the page is final
      → date order (the DATE_ORDER_POOL most relevant, newest first) → the page's rows → highlights
"""

from __future__ import annotations

from functools import partial

from search.query.fusion import FUSION_POOL, Fused, Ranked, blend, keyword_scores, single
from search.query.highlights import add_highlights
from search.query.paging import GROWTH
from search.query.plan import QueryPlan
from search.query.results import Page, SearchResult
from search.query.retrievers import RETRIEVERS, Candidates, Sources


def search(plan: QueryPlan, sources: Sources) -> Page:
    """One page of the plan's results, and whether another follows."""
    limit = plan.want if plan.mode != "auto" else max(plan.want, FUSION_POOL)
    while True:
        fused = rank(plan, sources, limit)
        if plan.above_floor_only:
            fused = _above_only(fused)
        if fused.complete or fused.final >= plan.want:
            break
        limit *= GROWTH
    order = fused.ranked if fused.complete else fused.ranked[: fused.final]
    if plan.filters.order == "date":
        order = _by_date(order[: plan.want], sources)
    shown = order[plan.start : plan.end]
    results = _results(shown, sources)
    add_highlights(sources.store, results, plan)
    above = None
    if plan.floor is not None and plan.filters.order == "relevance":
        above = next((n for n, r in enumerate(order) if not r.above), len(order))
    return Page(
        results,
        has_more=not plan.at_max_k and len(order) > plan.end,
        k=plan.k,
        page=plan.page,
        floor=plan.floor,
        above_floor=above,
    )


def rank(plan: QueryPlan, sources: Sources, limit: int) -> Fused:
    """The plan's ranking from its retrievers, each asked for ``limit`` candidates."""
    if plan.mode == "captions":
        return single(plan, RETRIEVERS["captions"].retrieve(plan, sources, limit), "caption")
    if plan.mode == "keywords":
        found = RETRIEVERS["keywords"].retrieve(plan, sources, limit)
        return single(plan, _without_negative(plan, sources, found), "keywords", shows_score=False)
    if plan.mode == "auto":
        keyword = RETRIEVERS["keywords"].retrieve(plan, sources, limit)
        if keyword.matched_any:
            return _auto(plan, sources, keyword, RETRIEVERS["vision"].retrieve(plan, sources, limit))
        # no word of the query is in the keyword index: vision alone, and only as deep as the page (the
        # fusion pool's 100 rows cost 100 row reads, ~90 ms more per query at 10M images)
        limit = plan.want if limit == max(plan.want, FUSION_POOL) else limit
    return single(plan, RETRIEVERS["vision"].retrieve(plan, sources, limit), "image")


def _auto(plan: QueryPlan, sources: Sources, keyword: Candidates, vision: Candidates) -> Fused:
    vec = sources.vector(plan)
    cosines = {h.id: h.score for h in vision.hits}
    rest = [h.id for h in keyword.hits if h.id not in cosines]
    if rest:
        stored = sources.store.vectors_of(rest, plan.live.dim)
        min_score = plan.filters.min_score
        for i in rest:
            if i in stored:
                cos = float(stored[i] @ vec)
                if min_score is None or cos >= min_score:
                    cosines[i] = cos
    keywords = {h.id: h.score for h in keyword.hits}
    if keyword.cut is not None:  # images the vision list holds may match below the keyword list's end
        missing = [i for i in cosines if i not in keywords]
        keywords.update(keyword_scores(plan, sources, missing))
    negative: set[int] = set()
    kw = plan.keywords
    if kw is not None and kw.negative:
        negative = sources.store.keyword_matches(kw.negative, list(cosines))
    return blend(plan, vision, keyword, cosines, keywords, negative, _best_keyword(plan, sources))


def _best_keyword(plan: QueryPlan, sources: Sources) -> float:
    """The keyword score that scales to 1: each positive term's best bm25, weighted and summed (fixed by
    the query, whatever the filters and the depth)."""
    assert plan.keywords is not None
    best = 0.0
    for match, weight in plan.keywords.positive:
        top: list[tuple[int, float]] = sources.cached(
            plan, "fts", partial(sources.store.keyword_ranking, match, 1), match, 1
        )
        best += weight * (top[0][1] if top else 0.0)
    return best


def _without_negative(plan: QueryPlan, sources: Sources, found: Candidates) -> Candidates:
    kw = plan.keywords
    if kw is None or not kw.negative or not found.hits:
        return found
    negative = sources.store.keyword_matches(kw.negative, [h.id for h in found.hits])
    return Candidates([h for h in found.hits if h.id not in negative], found.cut, found.matched_any)


def _above_only(fused: Fused) -> Fused:
    """min_score=auto in auto mode: what is above the floor (keyword matches count), nothing under it."""
    kept = [r for r in fused.ranked if r.above]
    final = sum(1 for r in fused.ranked[: fused.final] if r.above)
    # once a result under the floor is final, nothing unseen can be above it
    complete = fused.complete or any(not r.above for r in fused.ranked[: fused.final])
    return Fused(kept, len(kept) if complete else final, complete)


def _by_date(order: list[Ranked], sources: Sources) -> list[Ranked]:
    """The most relevant results, newest first (ties keep their relevance order)."""
    rows = sources.rows.alive(r.id for r in order)
    # a stable sort, reversed, keeps equal dates in their relevance order
    return sorted((r for r in order if r.id in rows), key=lambda r: rows[r.id].date or "", reverse=True)


def _results(shown: list[Ranked], sources: Sources) -> list[SearchResult]:
    rows = sources.rows.alive(r.id for r in shown)
    out = []
    for r in shown:
        row = rows.get(r.id)
        if row is None:
            continue
        result = SearchResult(**row.to_dict())
        result.score = r.score
        result.matched = list(r.matched)
        if isinstance(r.evidence, str) and "caption" in r.matched:
            result.matched_caption = result.caption = r.evidence
        out.append(result)
    return out
