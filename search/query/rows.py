"""Hydration: which candidates are still results, and what a result shows, read once per request.

A candidate from any retriever is *alive* when its row is still indexed and passes the folder and date
filters (rows may have been deleted or moved since the index was published). Checking that reads the
row from the covering index (``Store.result_rows``), which is also everything a result shows; so one
:class:`Rows` per request keeps what it read, and the page is built from it without reading again.
"""

from __future__ import annotations

from collections.abc import Iterable

from search.query.results import SearchResult, to_result
from search.stages import stage
from search.store.database import Store
from search.store.filters import in_dates, under


class Rows:
    """The alive rows among ids asked for, as results without a score; memoised for one request."""

    def __init__(self, store: Store, folder: str | None, date_from: str | None, date_to: str | None):
        self.store = store
        self.folder, self.date_from, self.date_to = folder, date_from, date_to
        self._seen: dict[int, SearchResult | None] = {}

    @stage("hydrate")
    def alive(self, ids: Iterable[int]) -> dict[int, SearchResult]:
        """The results of the ids whose rows are alive (each id read at most once per request)."""
        ids = [int(i) for i in ids]
        missing = list(dict.fromkeys(i for i in ids if i not in self._seen))
        if missing:
            rows = self.store.result_rows(missing)
            captions = self.store.primary_captions(list(rows))
            for image_id in missing:
                row = rows.get(image_id)
                result = None
                if (
                    row is not None
                    and row.status == "indexed"
                    and not (self.folder and not under(row.path, self.folder))
                ):
                    result = to_result(row, None, captions.get(image_id))
                    if not in_dates((result.date or "")[:10], self.date_from, self.date_to):
                        result = None
                self._seen[image_id] = result
        out: dict[int, SearchResult] = {}
        for i in ids:
            found = self._seen[i]
            if found is not None:
                out[i] = found
        return out
