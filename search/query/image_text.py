"""The text read inside images (OCR, ``search/store/ocr.py``) as a retriever: one more keyword source.

Registered in :data:`search.query.retrievers.WORD_SOURCES` as ``"text"``. Each positive text term's words
are looked up in ``ocr_fts`` (a code or a long word also as a prefix: "KX447" finds "KX4471B"), and an
image scores the weighted sum of its terms' bm25, like :class:`search.query.retrievers.Keywords`; its
evidence is the matched text with the matched words between MARK_START and MARK_END (at most
:data:`EVIDENCE_CHARS` characters around the first match).
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import TYPE_CHECKING

from search.query.keywords import marked_spans
from search.store.ocr import MARK_START, text_match

if TYPE_CHECKING:  # retrievers.py imports this module to register it: its names are imported when used
    from search.query.plan import QueryPlan
    from search.query.results import SearchResult
    from search.query.retrievers import Candidates, Hit, Sources

EVIDENCE_CHARS = 500


def excerpt(marked: str, size: int = EVIDENCE_CHARS) -> str:
    """About ``size`` characters of the read text around its first highlighted word, whole lines joined."""
    flat = " · ".join(line for line in marked.split("\n") if line.strip())
    first = flat.find(MARK_START)
    start = max(0, first - size // 4) if first > size // 2 else 0
    return flat[start : start + size]


class ImageText:
    """The query's words in the text read from images: the weighted sum of each positive term's bm25.

    ``candidates`` and ``hit``: the registry's result types (``Candidates``, ``Hit``), handed in by
    ``search.query.retrievers``, which imports this module (so this one never imports it back)."""

    name = "text"

    def __init__(self, candidates: type[Candidates], hit: type[Hit]):
        self._candidates = candidates
        self._hit = hit

    @staticmethod
    def _positive(plan: QueryPlan) -> list[tuple[str, float]]:
        return [(m, t.weight) for t in plan.terms if t.weight > 0 and not t.is_image if (m := text_match([t.text]))]

    def retrieve(self, plan: QueryPlan, sources: Sources, limit: int) -> Candidates:
        positive = self._positive(plan)
        if not positive:
            return self._candidates([], None, matched_any=False)
        store = sources.store
        scores: dict[int, float] = defaultdict(float)
        cut, full = 0.0, False
        for match, weight in positive:
            found: list[tuple[int, float]] = sources.cached(
                plan, "ocr", partial(store.text_ranking, match, limit), match, limit
            )
            for image_id, score in found:
                scores[image_id] += weight * score
            if len(found) >= limit:
                full = True
                cut += weight * found[-1][1]
        if len(positive) > 1 and scores:  # a hit of one term may match another below that term's list
            exact: dict[int, float] = defaultdict(float)
            for match, weight in positive:
                for image_id, score in store.text_scores(match, list(scores)).items():
                    exact[image_id] += weight * score
            scores = exact
        if not scores:
            return self._candidates([], None, matched_any=False)
        alive = sources.rows.alive(scores)
        ranked = sorted(((i, s) for i, s in scores.items() if i in alive), key=lambda p: (-p[1], p[0]))
        any_word = " OR ".join(m for m, _ in positive)
        marked = store.text_highlights(any_word, [i for i, _ in ranked[: plan.want]])
        hits = [self._hit(i, s, excerpt(marked[i]) if i in marked else None) for i, s in ranked]
        return self._candidates(hits, cut if full else None)

    def scores(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> dict[int, float]:
        """The exact score of each of ``ids`` whose text matches."""
        out: dict[int, float] = defaultdict(float)
        for match, weight in self._positive(plan) if ids else []:
            for image_id, score in sources.store.text_scores(match, ids).items():
                out[image_id] += weight * score
        return dict(out)

    def best(self, plan: QueryPlan, sources: Sources) -> float:
        """The score that scales to 1: each positive term's best bm25, weighted and summed."""
        best = 0.0
        for match, weight in self._positive(plan):
            top: list[tuple[int, float]] = sources.cached(
                plan, "ocr", partial(sources.store.text_ranking, match, 1), match, 1
            )
            best += weight * (top[0][1] if top else 0.0)
        return best

    def negative(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> set[int]:
        """Which of ``ids`` hold a negative term's words in their text."""
        words = [t.text for t in plan.terms if t.weight < 0 and not t.is_image]
        match = text_match(words)
        return set(sources.store.text_scores(match, ids)) if match and ids else set()

    def show(self, result: SearchResult, evidence: object) -> None:
        """A text hit shows the text it matched, its matched words' spans marked, unless a caption or file
        name match already shows its own."""
        if isinstance(evidence, str) and result.matched_text is None:
            result.matched_text, result.matched_spans = marked_spans(evidence)
