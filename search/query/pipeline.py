"""The one query path: plan → retrievers → fusion → the page, hydrated once.

::

    plan_query (parse once, one live snapshot)
      → retrievers (vision, keywords, captions: search.query.retrievers)
      → fusion (one ranking and how much of it is final: search.query.fusion)
      → one result per video, at its best frame (search.query.groups)
      → more from the retrievers until the page is final
      → date order (the DATE_ORDER_POOL most relevant, newest first) → the page's rows → highlights
"""

from __future__ import annotations

from search.query.fusion import FUSION_POOL, Fused, Ranked, Words, blend, single, words_only
from search.query.groups import best_cosines, grouped, moments
from search.query.highlights import add_highlights
from search.query.paging import GROWTH
from search.query.plan import QueryPlan
from search.query.results import Page, SearchResult
from search.query.retrievers import RETRIEVERS, WORD_SOURCES, Candidates, Sources


def search(plan: QueryPlan, sources: Sources) -> Page:
    """One page of the plan's results, and whether another follows."""
    limit = plan.want if plan.mode != "auto" else max(plan.want, FUSION_POOL)
    while True:
        fused = rank(plan, sources, limit)
        if plan.above_floor_only:
            fused = _above_only(fused)
        fused = grouped(fused, sources.rows)  # pages count videos, not frames
        if fused.complete or fused.final >= plan.want:
            break
        limit *= GROWTH
    order = fused.ranked if fused.complete else fused.ranked[: fused.final]
    if plan.filters.order == "date":
        order = _by_date(order[: plan.want], sources)
    shown = order[plan.start : plan.end]
    results = _results(shown, sources)
    _videos(results, plan, sources)
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
    if plan.mode in ("keywords", "auto"):
        found = {
            name: (source, weight, source.retrieve(plan, sources, limit))
            for name, (source, weight) in WORD_SOURCES.items()
        }
        if plan.mode == "keywords":
            ids = sorted({h.id for _, _, c in found.values() for h in c.hits})
            return words_only(plan, _words(plan, sources, found, ids))
        if any(c.matched_any for _, _, c in found.values()):
            vision = RETRIEVERS["vision"].retrieve(plan, sources, limit)
            cosines = _cosines(plan, sources, vision, [h.id for _, _, c in found.values() for h in c.hits])
            return blend(plan, vision, cosines, _words(plan, sources, found, sorted(cosines)))
        # no word of the query matched: vision alone, and only as deep as the page (the fusion pool's 100
        # rows cost 100 row reads, ~90 ms more per query at 10M images)
        limit = plan.want if limit == max(plan.want, FUSION_POOL) else limit
    return single(plan, RETRIEVERS["vision"].retrieve(plan, sources, limit), "image")


def _cosines(plan: QueryPlan, sources: Sources, vision: Candidates, others: list[int]) -> dict[int, float]:
    """The exact cosine of every candidate: the vision hits', and the stored vectors' of the word hits
    vision did not return (``min_score`` applies to both)."""
    cosines = {h.id: h.score for h in vision.hits}
    rest = list(dict.fromkeys(i for i in others if i not in cosines))
    if rest:
        vec = sources.vector(plan)
        min_score = plan.filters.min_score
        for i, stored in sources.store.vectors_of(rest, plan.live.dim).items():
            cos = float(stored @ vec)
            if min_score is None or cos >= min_score:
                cosines[i] = cos
        videos = [i for i in rest if i not in cosines]  # a video row's cosine is its best frame's
        if videos:
            for i, cos in best_cosines(sources.store.video_frames(videos, plan.live.dim), vec).items():
                if min_score is None or cos >= min_score:
                    cosines[i] = cos
    return cosines


def _words(plan: QueryPlan, sources: Sources, found: dict, ids: list[int]) -> list[Words]:
    """Each word source's part: exact scores of every candidate (beyond its own list where the list is not
    complete), its negative matches and its scale."""
    out = []
    for name, (source, weight, cands) in found.items():
        scores = {h.id: h.score for h in cands.hits}
        if cands.cut is not None:
            missing = [i for i in ids if i not in scores]
            scores.update(source.scores(plan, sources, missing))
        best = source.best(plan, sources)
        out.append(Words(name, weight, cands, scores, source.negative(plan, sources, ids), best))
    return out


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
        elif isinstance(r.evidence, dict):  # a word source that shows what it matched fills the result
            for name, evidence in r.evidence.items():
                show = getattr(WORD_SOURCES[name][0], "show", None)
                if show is not None:
                    show(result, evidence)
        out.append(result)
    return out


def _videos(results: list[SearchResult], plan: QueryPlan, sources: Sources) -> None:
    """Video results say so, with their length and moments: the best frame's time and the next best, from
    the video's own frames scored against the query vector (none in keywords mode: the poster's time)."""
    infos = sources.store.video_infos([r.id for r in results])
    if not infos:
        return
    vec = sources.vector(plan) if plan.mode != "keywords" else None
    frames = sources.store.video_frames(list(infos), plan.live.dim) if vec is not None else {}
    for result in results:
        info = infos.get(result.id)
        if info is None:
            continue
        result.kind, result.duration = "video", info.duration
        found = frames.get(result.id)
        if vec is None or found is None:
            result.time, result.moments = info.poster, []
        else:
            result.time, result.moments = moments(found, vec, plan.filters.min_score)
