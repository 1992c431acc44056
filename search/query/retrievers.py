"""Retrievers: each source of ranked candidates behind one small protocol.

A retriever answers ``retrieve(plan, sources, limit)`` with :class:`Candidates`: alive hits (rows still
indexed and passing the plan's filters), each ``(id, score, evidence)``, and the *cut*, a score no hit it
has not returned can exceed (None when it has returned every hit it has). Fusion (search.query.fusion)
needs no more than that to know which of its results are final, so a retriever is asked for more only
when the page reaches past what is final.

Adding a source is one class here (or in its own module) and one line in :data:`RETRIEVERS` (a vector
source) or :data:`WORD_SOURCES` (a source of the query's words, with its weight in the fusion); the engine,
the fusion and the web stay as they are. The text read from images and the frames of videos are the next
two sources.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from search.query.cache import QueryCache
from search.query.image_text import ImageText
from search.query.paging import Ranking, first_fetch
from search.query.plan import QueryPlan
from search.query.rows import Rows
from search.query.vectors import QueryVectors
from search.stages import stage
from search.vectors.filtered import Allowed, Ranked, Subset, allowed_of, ranked, subset_of

if TYPE_CHECKING:
    from search.store.database import Store


@dataclass(frozen=True)
class Hit:
    """One candidate: an image id, its score on the retriever's own scale (higher is better), and what
    matched (a caption's text, say), for the result to show."""

    id: int
    score: float
    evidence: Any = None


@dataclass
class Candidates:
    """A retriever's alive hits, best first, and the score none of its other hits exceeds (None: no others)."""

    hits: list[Hit]
    cut: float | None
    # Hits before the filters: whether the source matched anything at all (auto mode without a keyword
    # match is vision alone).
    matched_any: bool = True
    # Where the returned hits end in the (-score, id) order, when the source lists its hits in that order:
    # every other hit comes after it. Otherwise only the score is known (an unseen hit may tie the cut).
    after: tuple[float, int] | None = None

    @property
    def cut_key(self) -> tuple[float, float] | None:
        """The least (-score, id) key a hit not returned can have (None: there is none)."""
        if self.cut is None:
            return None
        return (self.after[0], self.after[1] + 0.5) if self.after is not None else (-self.cut, -1.0)


@dataclass
class Sources:
    """What retrievers read, for one request: the store, the live index in the plan, the engine's query
    vectors and cache, and this request's rows."""

    store: Store
    vectors: QueryVectors
    cache: QueryCache
    rows: Rows
    _vector: np.ndarray | None = field(default=None, repr=False)

    def vector(self, plan: QueryPlan) -> np.ndarray:
        """The plan's query vector, made once (kept in the cache for the next page)."""
        if self._vector is None:
            key = None if plan.key is None else ("vector", plan.key)
            vec = self.cache.get_or_make(plan.live.version, key, lambda: self.vectors.of(plan.query, plan.terms))
            check_dim(plan, vec)
            self._vector = vec
        return self._vector

    def allowed(self, plan: QueryPlan) -> Allowed | None:
        """The ids the folder and date filters keep (None: no such filter), from an indexed query, kept."""
        f = plan.filters
        if not (f.folder or f.date_from or f.date_to):
            return None
        key = ("filter", plan.folder, f.date_from, f.date_to)
        return self.cache.get_or_make(
            plan.live.version,
            key,
            lambda: allowed_of(self.store.filtered_ids(plan.folder, f.date_from, f.date_to), plan.live.dim),
        )

    def subset(self, plan: QueryPlan, allowed: Allowed) -> Subset:
        """The stored vectors of a filter's few rows, read once and kept with its ids."""
        f = plan.filters
        key = ("subset", plan.folder, f.date_from, f.date_to)
        return self.cache.get_or_make(plan.live.version, key, lambda: subset_of(self.store, allowed, plan.live.dim))

    def cached(self, plan: QueryPlan, name: str, make: Callable[[], Any], *extra: Hashable) -> Any:
        key = None if plan.key is None else (name, plan.key, plan.filter_key, *extra)
        return self.cache.get_or_make(plan.live.version, key, make)


def check_dim(plan: QueryPlan, vec: np.ndarray) -> None:
    if plan.live.dim != vec.shape[-1]:
        from search.errors import EngineError

        raise EngineError(
            f"the index holds {plan.live.dim}-d vectors but the model makes {vec.shape[-1]}-d ones: "
            "re-run `glimpse index` with the model the index was built with"
        )


class Retriever(Protocol):
    """A source of ranked candidates. ``name`` is what a result's ``matched`` says it matched by."""

    name: str

    def retrieve(self, plan: QueryPlan, sources: Sources, limit: int) -> Candidates: ...


class WordSource(Retriever, Protocol):
    """A source that matches the query's words (fused with vision in ``auto`` mode, alone in ``keywords``):
    besides its ranked hits, it scores any given images exactly (so fusion knows every candidate's score,
    not only the ones in its list), says which score scales to 1, and which images match a negative term."""

    def scores(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> dict[int, float]: ...

    def best(self, plan: QueryPlan, sources: Sources) -> float: ...

    def negative(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> set[int]: ...

    # Optional: ``show(result, evidence)`` puts a hit's evidence on the page's result (the text it matched).


class Vision:
    """The query's vector against the image index (FAISS, or the exact search of a filter's few rows)."""

    name = "image"

    def retrieve(self, plan: QueryPlan, sources: Sources, limit: int) -> Candidates:
        ranking = self._ranking(plan, sources)
        ids, scores, cut = ranking.alive_upto(limit, self._fetch(plan, sources), lambda i, _: sources.rows.alive(i))
        return Candidates([Hit(i, s) for i, s in zip(ids, scores)], cut)

    def _ranking(self, plan: QueryPlan, sources: Sources) -> Ranking:
        """The query's kept ranking, or a new one from its first search."""

        def make() -> Ranking:
            from search.query.kinds import SimilarQuery

            exclude: set[int] = set()
            if isinstance(plan.query, SimilarQuery):  # the image itself, or every frame of the video
                own = int(plan.query.image_id)
                found = sources.store.video_frames([own], plan.live.dim).get(own)
                exclude = {own} | ({int(i) for i in found.ids} if found is not None else set())
            asked = first_fetch(plan.want) + len(exclude)
            return Ranking(self._fetch(plan, sources)(asked), asked, plan.filters.min_score, exclude)

        return sources.cached(plan, "ranking", make)

    def _fetch(self, plan: QueryPlan, sources: Sources) -> Callable[[int], Ranked]:
        def fetch(n: int) -> Ranked:
            vec = sources.vector(plan)
            allowed = sources.allowed(plan)

            def subset() -> Subset:  # asked only when a filter is set
                assert allowed is not None
                return sources.subset(plan, allowed)

            return ranked(plan.live, vec, n, allowed, subset)

        return fetch


class Keywords:
    """The query's words in the keyword index (FTS5 over file names, folders and captions): the weighted
    sum of each positive term's bm25 (higher is better)."""

    name = "keywords"

    def retrieve(self, plan: QueryPlan, sources: Sources, limit: int) -> Candidates:
        kw = plan.keywords
        if kw is None or not kw.positive:
            return Candidates([], None, matched_any=False)
        scores: dict[int, float] = defaultdict(float)
        found_last: tuple[int, float] | None = None
        cut = 0.0
        full = False
        for match, weight in kw.positive:
            found: list[tuple[int, float]] = sources.cached(
                plan, "fts", partial(sources.store.keyword_ranking, match, limit), match, limit
            )
            for image_id, score in found:
                scores[image_id] += weight * score
            found_last = found[-1] if found else None
            if len(found) >= limit:
                full = True
                cut += weight * found[-1][1]
        if len(kw.positive) > 1 and scores:
            # a hit of one term may match another below that term's list: score every term exactly
            exact: dict[int, float] = defaultdict(float)
            for match, weight in kw.positive:
                for image_id, score in sources.store.keyword_scores(match, list(scores)).items():
                    exact[image_id] += weight * score
            scores = exact
        if not scores:
            return Candidates([], None, matched_any=False)
        alive = sources.rows.alive(scores)
        hits = sorted((Hit(i, s) for i, s in scores.items() if i in alive), key=lambda h: (-h.score, h.id))
        # one term's list comes in (-score, id) order (Store.keyword_ranking): it ends at its last row
        after = (-last[1], last[0]) if full and len(kw.positive) == 1 and (last := found_last) else None
        return Candidates(hits, cut if full else None, after=after)

    def scores(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> dict[int, float]:
        """The exact score of each of ``ids`` that matches (bm25 over the whole table, so as in the list)."""
        out: dict[int, float] = defaultdict(float)
        if plan.keywords is not None and ids:
            for match, weight in plan.keywords.positive:
                for image_id, score in sources.store.keyword_scores(match, ids).items():
                    out[image_id] += weight * score
        return dict(out)

    def best(self, plan: QueryPlan, sources: Sources) -> float:
        """The score that scales to 1: each positive term's best bm25, weighted and summed (fixed by the
        query, whatever the filters and the depth)."""
        best = 0.0
        for match, weight in plan.keywords.positive if plan.keywords is not None else []:
            top: list[tuple[int, float]] = sources.cached(
                plan, "fts", partial(sources.store.keyword_ranking, match, 1), match, 1
            )
            best += weight * (top[0][1] if top else 0.0)
        return best

    def negative(self, plan: QueryPlan, sources: Sources, ids: list[int]) -> set[int]:
        """Which of ``ids`` match a negative term's words."""
        kw = plan.keywords
        if kw is None or not kw.negative or not ids:
            return set()
        return sources.store.keyword_matches(kw.negative, ids)


class Captions:
    """The whole text against caption vectors: each image once, scored by its best caption."""

    name = "caption"

    def retrieve(self, plan: QueryPlan, sources: Sources, limit: int) -> Candidates:
        live = plan.live
        if live.captions is None or live.captions.ntotal == 0:
            return Candidates([], None, matched_any=False)
        allowed = sources.allowed(plan)
        if allowed is not None and len(allowed) == 0:
            return Candidates([], None)
        vec = sources.vector(plan)
        fetch = min(live.captions.ntotal, max(limit * 4, 50))
        while True:
            with stage("faiss"):
                scores, ids = live.search_captions(vec[None, :].astype(np.float32), fetch)
            pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            caps = sources.store.captions_by_ids([i for i, _ in pairs])
            best: dict[int, tuple[float, str]] = {}
            for cid, score in pairs:
                if cid in caps:
                    image_id, caption = caps[cid]
                    if image_id not in best:
                        best[image_id] = (score, caption)
            min_score = plan.filters.min_score
            alive = sources.rows.alive(i for i, (s, _) in best.items() if min_score is None or s >= min_score)
            hits = [Hit(i, s, c) for i, (s, c) in best.items() if i in alive]
            exhausted = fetch >= live.captions.ntotal
            cut = None if exhausted else (pairs[-1][1] if pairs else None)
            if min_score is not None and cut is not None and cut < min_score:
                cut = None  # nothing unseen can pass min_score
            if len(hits) >= limit or cut is None:
                hits.sort(key=lambda h: (-h.score, h.id))
                return Candidates(hits, cut)
            fetch = min(live.captions.ntotal, fetch * 4)


# Every source, by the name a plan's mode asks for. One line per retriever.
RETRIEVERS: dict[str, Retriever] = {"vision": Vision(), "captions": Captions()}

# The word sources, one line each: the source and its weight within the words' half of the fusion
# (search.query.fusion: fused with vision in auto mode, alone in keywords mode).
WORD_SOURCES: dict[str, tuple[WordSource, float]] = {
    "keywords": (Keywords(), 1.0),
    "text": (ImageText(Candidates, Hit), 1.0),
}
