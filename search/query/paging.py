"""Pages over one query's ranking, kept between requests so page N+1 redoes nothing of page N.

A :class:`Ranking` holds the candidates FAISS (or the exact filtered search) returned, best first, with
filters, the query's own image and ``min_score`` already applied, and how far they have been checked
against the database: a candidate is *alive* when its row is still indexed and still passes the filters
(it may have been deleted or moved since the index was published). Pages are slices of the alive list, so
they continue each other exactly. Serving a page checks only candidates past the checked frontier (the
rows of that page, plus one to know whether another page follows) and loads only its own rows; when the
candidates run out, one larger search refills them (:data:`GROWTH` times as many).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np

from search.query.results import SearchResult
from search.vectors.filtered import Ranked

GROWTH = 4
# "order by date" re-sorts this many of the most relevant results, newest first.
DATE_ORDER_POOL = 200

# ids -> the alive ones' results (rows not alive are left out)
Hydrate = Callable[[Sequence[int], Sequence[float]], dict[int, SearchResult]]
# how many candidates -> that many (or all there are), best first
Fetch = Callable[[int], Ranked]


def first_fetch(want: int) -> int:
    """Candidates asked for a query's first page: enough for the next four pages without another search.

    Not more: above a few million images each candidate costs exact re-rank reads (ten per result past
    the first ten), so at 10M asking 100 instead of 50 read 1,000 rows instead of 500, and the search
    step took 13.6 ms instead of 8.5 (bench notes, issue 15). A sixth page refills with one search."""
    return max(5 * want, 50)


class Ranking:
    """One query's candidates and the alive ones among them; pages are asked under its lock."""

    def __init__(self, found: Ranked, asked: int, min_score: float | None, exclude: set[int]):
        self.min_score = min_score
        self.exclude = exclude
        self.asked = asked
        self._set(found)
        self.alive: list[int] = []
        self.by_date: list[int] | None = None
        self.checked = 0
        self.lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.scores.nbytes) + 64 * (len(self.alive) + 8)

    def _set(self, found: Ranked) -> None:
        ids, scores = found.ids, found.scores
        keep = np.ones(len(ids), bool)
        if self.exclude:
            keep &= ~np.isin(ids, list(self.exclude))
        cut = False
        if self.min_score is not None:
            above = scores >= self.min_score
            cut = bool((~above).any())
            keep &= above
        self.ids, self.scores = ids[keep], scores[keep]
        self.exhausted = found.exhausted or cut

    def page(self, start: int, end: int, want: int, order: str, fetch: Fetch, hydrate: Hydrate):
        """Results ``start:end`` of the alive candidates, and whether any follows (``want``: how many to
        have checked, ``end + 1`` below the deepest page)."""
        with self.lock:
            fresh = self._check(DATE_ORDER_POOL if order == "date" else want, fetch, hydrate)
            order_ids = self.alive
            if order == "date":
                if self.by_date is None:
                    pool = self.alive[:DATE_ORDER_POOL]
                    missing = [i for i in pool if i not in fresh]
                    fresh.update(hydrate(missing, self._scores_of(missing)))
                    self.by_date = sorted(
                        (i for i in pool if i in fresh), key=lambda i: fresh[i].date or "", reverse=True
                    )
                order_ids = self.by_date
            shown = order_ids[start:end]
            has_more = len(order_ids) > end
        missing = [i for i in shown if i not in fresh]
        if missing:
            fresh.update(hydrate(missing, self._scores_of(missing)))
        return [fresh[i] for i in shown if i in fresh], has_more

    def alive_at_least(self, floor: float, upto: int) -> int:
        """How many of the first ``upto`` alive candidates score at least ``floor``: best first, so the
        position where the ranking crosses it (``upto`` or more when it crosses later)."""
        with self.lock:
            ids = self.alive[:upto]
        return sum(1 for s in self._scores_of(ids) if s >= floor)

    def _check(self, want: int, fetch: Fetch, hydrate: Hydrate) -> dict[int, SearchResult]:
        """Check candidates past the frontier until ``want`` are alive or none are left."""
        fresh: dict[int, SearchResult] = {}
        while len(self.alive) < want:
            if self.checked >= len(self.ids):
                if self.exhausted:
                    break
                self.asked *= GROWTH
                had = len(self.ids)
                self._set(fetch(self.asked))  # the same search asked for more: the checked prefix is unchanged
                self.exhausted = self.exhausted or len(self.ids) <= had  # nothing new: never ask again
                continue
            batch = slice(self.checked, self.checked + want - len(self.alive))
            ids = [int(i) for i in self.ids[batch]]
            found = hydrate(ids, [float(s) for s in self.scores[batch]])
            self.alive.extend(i for i in ids if i in found)
            fresh.update(found)
            self.checked += len(ids)
        return fresh

    def _scores_of(self, ids: Sequence[int]) -> list[float]:
        pos = {int(i): float(s) for i, s in zip(self.ids, self.scores)}
        return [pos[i] for i in ids]
