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
        self.alive_scores: list[float] = []
        self.checked = 0
        self.lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.scores.nbytes) + 72 * (len(self.alive) + 8)

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

    def alive_upto(self, want: int, fetch: Fetch, hydrate: Hydrate) -> tuple[list[int], list[float], float | None]:
        """The alive candidates, best first, checked until ``want`` are alive or none are left; and the
        score no candidate not returned exceeds (None: there is none)."""
        with self.lock:
            self._check(want, fetch, hydrate)
            if self.checked < len(self.ids):  # the best unchecked candidate
                cut: float | None = float(self.scores[self.checked])
            elif self.exhausted:
                cut = None
            else:  # what a larger search would add scores no more than the last candidate
                cut = float(self.scores[-1]) if len(self.ids) else float("inf")
            return list(self.alive), list(self.alive_scores), cut

    def _check(self, want: int, fetch: Fetch, hydrate: Hydrate) -> None:
        """Check candidates past the frontier until ``want`` are alive or none are left."""
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
            scores = [float(s) for s in self.scores[batch]]
            found = hydrate(ids, scores)
            for i, s in zip(ids, scores):
                if i in found:
                    self.alive.append(i)
                    self.alive_scores.append(s)
            self.checked += len(ids)
