"""The text read inside images (OCR, ``search/store/ocr.py``) as a retriever: one more keyword source.

Registered in :data:`search.query.retrievers.WORD_SOURCES` as ``"text"``. Each positive text term's words
are looked up in ``ocr_fts`` (a code or a long word also as a prefix: "KX447" finds "KX4471B"), and an
image scores the weighted sum of its terms' bm25, like :class:`search.query.retrievers.Keywords`. A hit's
``matched`` says ``"text"``; what it matched is shown at hydration, for every result of the page at once
(``text``/``text_spans``: search.query.highlights.add_text).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from search.query.keywords import marked_spans
from search.store.fts import fts_text, shown_text
from search.store.ocr import MARK_START, text_match

if TYPE_CHECKING:  # retrievers.py imports this module to register it: its names are imported when used
    from search.query.plan import QueryPlan
    from search.query.retrievers import Candidates, Hit, Sources
    from search.store.database import Store


def positive_matches(plan: QueryPlan) -> list[tuple[str, float]]:
    """Each positive text term's ``ocr_fts`` query and its weight."""
    return [(m, t.weight) for t in plan.terms if t.weight > 0 and not t.is_image if (m := text_match([t.text]))]


def any_text_word(plan: QueryPlan) -> str | None:
    """One ``ocr_fts`` query matching any positive word of the plan (to mark them); None: there is none."""
    return " OR ".join(m for m, _ in positive_matches(plan)) or None


def words_query(text: str | None) -> str | None:
    """The ``ocr_fts`` query of a query text's positive words (a detail page's ``q``), as a search marks
    them; None: no text, or no word in it. Raises ValueError for a query the parser refuses."""
    if not text or not text.strip():
        return None
    from search.query.kinds import parse_query

    terms = parse_query(text)
    return " OR ".join(m for t in terms if t.weight > 0 and not t.is_image if (m := text_match([t.text]))) or None


@dataclass(frozen=True)
class TextOnImage:
    """The text read in one image as its detail page shows it: the searchable lines joined by newlines,
    the query's words' ``[start, end)`` spans in it, and the boxes to outline (the lines holding a query
    word, every line without a query), each four corners as fractions of the upright image."""

    text: str
    spans: list[list[int]]
    boxes: list[tuple[float, ...]]
    engine: str


def text_on_image(store: Store, image_id: int, query_text: str | None = None) -> TextOnImage | None:
    """What was read in ``image_id`` and where the query's words are; None when no text is searchable in it."""
    match = words_query(query_text)
    marked = store.page_texts([image_id], match).get(image_id)
    read = store.text_of([image_id]).get(image_id)
    if marked is None or read is None:
        return None
    # The searchable text holds the confident lines in order: pair each with its stored line (and box).
    boxes: list[tuple[float, ...]] = []
    stored = iter(read.lines)
    for line in marked.split("\n"):
        plain = marked_spans(line)[0]
        box = next((ln.box for ln in stored if shown_text(fts_text(ln.text)) == plain), None)
        if box is not None and (match is None or MARK_START in line):
            boxes.append(box)
    text, spans = marked_spans(marked)
    return TextOnImage(text, spans, boxes, read.engine)


class ImageText:
    """The query's words in the text read from images: the weighted sum of each positive term's bm25.

    ``candidates`` and ``hit``: the registry's result types (``Candidates``, ``Hit``), handed in by
    ``search.query.retrievers``, which imports this module (so this one never imports it back)."""

    name = "text"

    def __init__(self, candidates: type[Candidates], hit: type[Hit]):
        self._candidates = candidates
        self._hit = hit

    def retrieve(self, plan: QueryPlan, sources: Sources, limit: int) -> Candidates:
        positive = positive_matches(plan)
        if not positive:
            return self._candidates([], None, matched_any=False)
        store = sources.store
        scores: dict[int, float] = defaultdict(float)
        cut, full = 0.0, False
        last: tuple[int, float] | None = None
        for match, weight in positive:
            found: list[tuple[int, float]] = sources.cached(
                plan, "ocr", partial(store.text_ranking, match, limit), match, limit
            )
            for image_id, score in found:
                scores[image_id] += weight * score
            last = found[-1] if found else None
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
        hits = [self._hit(i, s) for i, s in ranked]
        # one term's list comes in (-score, id) order (Store.text_ranking): every hit it left out comes after
        # its last row, so ties at the cut do not keep the page open (as search.query.retrievers.Keywords)
        after = (-last[1] * positive[0][1], last[0]) if full and len(positive) == 1 and last else None
        return self._candidates(hits, cut if full else None, after=after)

    def scores(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> dict[int, float]:
        """The exact score of each of ``ids`` whose text matches."""
        out: dict[int, float] = defaultdict(float)
        for match, weight in positive_matches(plan) if ids else []:
            for image_id, score in sources.store.text_scores(match, ids).items():
                out[image_id] += weight * score
        return dict(out)

    def best(self, plan: QueryPlan, sources: Sources) -> float:
        """The score that scales to 1: each positive term's best bm25, weighted and summed."""
        best = 0.0
        for match, weight in positive_matches(plan):
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
