"""One fusion step: the retrievers' candidates → one ranking, and how much of it is final.

Every mode ranks by one key per result, so a page is a slice of one ordered list:

- ``vision`` and ``captions``: the retriever's score (a cosine), best first;
- ``keywords``: the keyword score (bm25), images matching a negative term left out;
- ``auto``: the even blend of the two (alpha 0.5: on held-out captions it beat reciprocal rank fusion and
  the other blends in recall@10 and MRR, BENCHMARKS.md "Hybrid search"): ``alpha * cosine scaled between
  the 100th and the best vision score, clipped to [0, 1] + (1 - alpha) * keyword score / the best keyword
  score the query can reach``. Both scales are fixed by the query, not by how many candidates were
  fetched, so a deeper page never reorders a shallower one. An image whose keywords match a negative term
  loses its keyword match and goes below every image that does not; with a relevance floor, what is above
  it (its cosine reaches the floor, or its words matched) comes before what is not.

Ties go to the higher cosine, then the lower id. A result is *final* when no candidate a retriever has
not returned could rank before it (from the retrievers' cuts: the threshold algorithm): the pipeline
asks the retrievers for more until the page and the one result past it are final. With exact indexes
that makes every page equal the brute-force ranking of the whole collection (tests/test_query_paging.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from search.query.plan import QueryPlan
from search.query.retrievers import Candidates, Sources

ALPHA = 0.5
# The vision score that scales to 0 in auto mode is the FUSION_POOL-th best: fixed per query.
FUSION_POOL = 100


@dataclass
class Ranked:
    """One result of the fused ranking, with what it is ranked by."""

    id: int
    score: float | None  # what the result shows: its cosine (None in keywords mode)
    key: tuple
    matched: list[str]
    evidence: object = None
    above: bool = True  # above the relevance floor (or no floor applies)


@dataclass
class Fused:
    ranked: list[Ranked]  # best first
    final: int  # how many, from the first, no unseen candidate can precede
    complete: bool  # no retriever has unseen candidates: asking for more cannot change anything


def single(plan: QueryPlan, cands: Candidates, name: str, shows_score: bool = True) -> Fused:
    """One retriever's ranking as it is (vision, captions, keywords)."""
    floor = plan.floor if plan.filters.order == "relevance" else None
    ranked = [
        Ranked(
            h.id,
            h.score if shows_score else None,
            (-h.score, h.id),
            [name],
            h.evidence,
            above=floor is None or h.score >= floor,
        )
        for h in cands.hits
    ]
    cut = cands.cut_key
    if cut is None:
        return Fused(ranked, len(ranked), True)
    final = next((n for n, r in enumerate(ranked) if not r.key < cut), len(ranked))
    return Fused(ranked, final, False)


def blend(
    plan: QueryPlan,
    vision: Candidates,
    keyword: Candidates,
    cosines: dict[int, float],
    keywords: dict[int, float],
    negative: set[int],
    best_keyword: float,
) -> Fused:
    """Auto mode: every candidate's exact cosine and keyword score (``cosines``, ``keywords``) blended."""
    scores = [h.score for h in vision.hits]
    hi = scores[0] if scores else 1.0
    lo = scores[min(FUSION_POOL, len(scores)) - 1] if scores else 0.0

    def scaled(cos: float) -> float:
        return min(1.0, max(0.0, (cos - lo) / (hi - lo))) if hi > lo else (1.0 if cos >= hi else 0.0)

    def norm_kw(score: float) -> float:
        return score / best_keyword if best_keyword > 0 else (1.0 if score > 0 else 0.0)

    floor = plan.floor if plan.filters.order == "relevance" else None
    by_vision = {h.id for h in vision.hits}
    ranked = []
    for image_id, cos in cosines.items():
        kw = 0.0 if image_id in negative else keywords.get(image_id, 0.0)
        fused = ALPHA * scaled(cos) + (1.0 - ALPHA) * norm_kw(kw)
        above = floor is None or cos >= floor or kw > 0
        matched = (["image"] if image_id in by_vision else []) + (["keywords"] if kw > 0 else [])
        key = (0 if above else 1, 1 if image_id in negative else 0, -fused, -cos, image_id)
        ranked.append(Ranked(image_id, cos, key, matched, above=above))
    ranked.sort(key=lambda r: r.key)
    if vision.cut is None:  # every image the filters keep has been seen by its vector
        return Fused(ranked, len(ranked), True)
    # the best key an unseen image could have: cosine at most the vision cut, keyword score at most the
    # keyword cut (0 when the keyword list is complete), never negative-demoted at best
    vcut, kcut = vision.cut, keyword.cut or 0.0
    group = 0 if floor is None or keyword.cut is not None or vcut >= floor else 1
    bound = (group, 0, -(ALPHA * scaled(vcut) + (1.0 - ALPHA) * norm_kw(kcut)), -vcut)
    final = next((n for n, r in enumerate(ranked) if not r.key[:4] < bound), len(ranked))
    return Fused(ranked, final, False)


def keyword_scores(plan: QueryPlan, sources: Sources, ids: list[int]) -> dict[int, float]:
    """The exact keyword score of each of ``ids`` (those not matching score nothing)."""
    out: dict[int, float] = {}
    assert plan.keywords is not None
    for match, weight in plan.keywords.positive:
        for image_id, score in sources.store.keyword_scores(match, ids).items():
            out[image_id] = out.get(image_id, 0.0) + weight * score
    return out
