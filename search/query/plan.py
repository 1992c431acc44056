"""A search, decided once: the :class:`QueryPlan` every later step reads and none recomputes.

Built per request from the client's values and one snapshot of the live index: the query's terms are
parsed here and only here, the floor is read from that snapshot's manifest, ``min_score=auto`` is resolved,
and the page depth fixes how many ranked results the request needs. Retrievers, fusion and hydration take
the plan; none of them parses text or looks at the live index again, so a hot swap mid-request cannot give
the floor of one version and the results of another.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.errors import EngineError
from search.query.args import check_paging
from search.query.cache import query_key
from search.query.floor import floor_for, resolve_auto
from search.query.keywords import KeywordPlan, keyword_plan
from search.query.kinds import MAX_K, Filters, Paging, Query, Term, TextQuery, parse_query

if TYPE_CHECKING:
    from search.vectors.live import LoadedIndex

# "order by date" re-sorts this many of the most relevant results, newest first (every mode).
DATE_ORDER_POOL = 200


@dataclass(frozen=True)
class QueryPlan:
    """Everything a search needs to know about its request, fixed before any index is read."""

    query: Query
    # Which ranking the request asks for: "vision" (a vector query, or text in ``images`` mode), "auto"
    # (vision fused with keywords), "keywords", "captions".
    mode: str
    terms: tuple[Term, ...]  # the text's parsed terms (empty for queries without text)
    keywords: KeywordPlan | None  # what the text asks of the keyword index (text queries only)
    filters: Filters  # min_score=auto already resolved to the floor (or kept as "above the floor only")
    floor: float | None  # the live version's relevance floor where it applies to this query
    above_floor_only: bool  # auto mode with min_score=auto: keep what is above the floor (keyword hits count)
    k: int
    page: int
    live: LoadedIndex = dataclasses.field(repr=False, compare=False)
    key: Hashable | None  # what identifies the query's work in the cache (None: not cacheable)

    @property
    def start(self) -> int:
        return self.page * self.k

    @property
    def end(self) -> int:
        return (self.page + 1) * self.k

    @property
    def want(self) -> int:
        """Ranked results the page needs: its own, and one past it (so ``has_more`` is exact) below MAX_K."""
        if self.filters.order == "date":
            return DATE_ORDER_POOL
        return self.end + 1 if self.end < MAX_K else self.end

    @property
    def at_max_k(self) -> bool:
        """The page ends where paging stops: no page can follow it."""
        return self.end >= MAX_K

    @property
    def folder(self) -> str | None:
        """The folder filter as an absolute path (the CLI may give ``~`` or a relative one)."""
        folder = self.filters.folder
        return os.path.abspath(os.path.expanduser(folder)) if folder else None

    @property
    def filter_key(self) -> tuple:
        f = self.filters
        return (self.folder, f.date_from, f.date_to, f.min_score, self.above_floor_only)


def plan_query(query: Query, filters: Filters | None, paging: Paging | None, live: LoadedIndex) -> QueryPlan:
    """The plan for one request: the only place a query's text is parsed."""
    paging = paging or Paging()
    k, page = int(paging.k), int(paging.page)
    check_paging(k, page, max_k=MAX_K)
    filters = filters or Filters()
    terms: tuple[Term, ...] = ()
    keywords = None
    mode = "vision"
    if isinstance(query, TextQuery):
        try:
            terms = tuple(parse_query(query.text or "", allow_files=query.allow_files))
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        keywords = keyword_plan(list(terms))
        mode = "vision" if query.mode == "images" else query.mode
    floor = floor_for(query, live.manifest)
    # auto: a keyword match is a real match whatever its cosine, so min_score=auto keeps it
    above_only = filters.min_score_auto and mode == "auto" and floor is not None
    filters = resolve_auto(filters, None if above_only else floor)
    if above_only:
        filters = dataclasses.replace(filters, min_score_auto=False)
    return QueryPlan(
        query=query,
        mode=mode,
        terms=terms,
        keywords=keywords,
        filters=filters,
        floor=floor,
        above_floor_only=above_only,
        k=k,
        page=page,
        live=live,
        key=query_key(query),
    )
