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
from search.query.retrievers import Candidates

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


@dataclass
class Words:
    """One word source's part in a fusion: its candidates, the exact score of every candidate it matches,
    the images matching a negative term, and the score that scales to 1."""

    name: str
    weight: float
    cands: Candidates
    scores: dict[int, float]
    negative: set[int]
    best: float

    def evidence(self, image_id: int) -> object:
        if not hasattr(self, "_evidence"):
            self._evidence = {h.id: h.evidence for h in self.cands.hits if h.evidence is not None}
        return self._evidence.get(image_id)

    def scaled(self, score: float) -> float:
        return score / self.best if self.best > 0 else (1.0 if score > 0 else 0.0)


def _evidence(words: list[Words], image_id: int, matched: list[str]) -> dict[str, object] | None:
    """What each matching word source showed for the image (``{source name: evidence}``), if any."""
    found = {w.name: ev for w in words if w.name in matched and (ev := w.evidence(image_id)) is not None}
    return found or None


def _words_score(words: list[Words], image_id: int) -> tuple[float, list[str]]:
    """The words' part of a fused score, each source's scaled score times its weight (a source added does
    not dilute the others), and the sources that matched; an image matching a negative term matches nothing."""
    if any(image_id in w.negative for w in words):
        return 0.0, []
    score, matched = 0.0, []
    for w in words:
        s = w.scores.get(image_id, 0.0)
        if s > 0:
            score += w.weight * w.scaled(s)
            matched.append(w.name)
    return score, matched


def _words_bound(words: list[Words]) -> float:
    """The most an image no word source returned can score."""
    return sum(w.weight * w.scaled(w.cands.cut or 0.0) for w in words)


def words_only(plan: QueryPlan, words: list[Words]) -> Fused:
    """``keywords`` mode: the word sources alone (score shown: none); negative matches left out."""
    ids = {h.id for w in words for h in w.cands.hits}
    ranked = []
    for image_id in ids:
        if any(image_id in w.negative for w in words):
            continue
        score, matched = _words_score(words, image_id)
        ranked.append(Ranked(image_id, None, (-score, image_id), matched, _evidence(words, image_id, matched)))
    ranked.sort(key=lambda r: r.key)
    open_sources = [w for w in words if w.cands.cut is not None]
    if not open_sources:
        return Fused(ranked, len(ranked), True)
    bound = -_words_bound(words)
    after = open_sources[0].cands.after if len(open_sources) == 1 else None
    # one source still listing, in (-score, id) order: an unseen image tying the bound comes after its last row
    cut = (bound, after[1] + 0.5) if after is not None else (bound, -1.0)
    final = next((n for n, r in enumerate(ranked) if not r.key < cut), len(ranked))
    return Fused(ranked, final, False)


def blend(plan: QueryPlan, vision: Candidates, cosines: dict[int, float], words: list[Words]) -> Fused:
    """Auto mode: every candidate's exact cosine (``cosines``) and word scores blended."""
    scores = [h.score for h in vision.hits]
    hi = scores[0] if scores else 1.0
    lo = scores[min(FUSION_POOL, len(scores)) - 1] if scores else 0.0

    def scaled(cos: float) -> float:
        return min(1.0, max(0.0, (cos - lo) / (hi - lo))) if hi > lo else (1.0 if cos >= hi else 0.0)

    floor = plan.floor if plan.filters.order == "relevance" else None
    by_vision = {h.id for h in vision.hits}
    negative = set().union(*(w.negative for w in words)) if words else set()
    ranked = []
    for image_id, cos in cosines.items():
        word_score, word_matched = _words_score(words, image_id)
        fused = ALPHA * scaled(cos) + (1.0 - ALPHA) * word_score
        above = floor is None or cos >= floor or bool(word_matched)
        matched = (["image"] if image_id in by_vision else []) + word_matched
        key = (0 if above else 1, 1 if image_id in negative else 0, -fused, -cos, image_id)
        ranked.append(Ranked(image_id, cos, key, matched, _evidence(words, image_id, word_matched), above=above))
    ranked.sort(key=lambda r: r.key)
    if vision.cut is None:  # every image the filters keep has been seen by its vector
        return Fused(ranked, len(ranked), True)
    # the best key an unseen image could have: cosine at most the vision cut, each word score at most its
    # source's cut (0 when the source's list is complete), never negative-demoted at best
    vcut = vision.cut
    words_open = any(w.cands.cut is not None for w in words)
    group = 0 if floor is None or words_open or vcut >= floor else 1
    bound = (group, 0, -(ALPHA * scaled(vcut) + (1.0 - ALPHA) * _words_bound(words)), -vcut)
    final = next((n for n, r in enumerate(ranked) if not r.key[:4] < bound), len(ranked))
    return Fused(ranked, final, False)
