"""Near-duplicate groups as a service: the last answer kept per live version and threshold.

Finding groups searches the whole collection (search.vectors.duplicates), and the Duplicates page asks
again for every page of groups; the answer is kept until the index version or the threshold changes.
A lock makes concurrent requests (waitress serves from several threads) wait for one search instead of
each starting its own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from search.vectors.duplicates import Duplicates, check_threshold, find_duplicates

if TYPE_CHECKING:
    from search.store.database import Store
    from search.vectors.live import LoadedIndex


class DuplicateGroups:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._kept: tuple[tuple[str, float], Duplicates] | None = None

    def get(self, live: LoadedIndex, threshold: float) -> Duplicates:
        key = (live.version, check_threshold(threshold))
        with self._lock:
            if self._kept is None or self._kept[0] != key:
                self._kept = (key, find_duplicates(self.store, live, key[1]))
            return self._kept[1]
