"""Recent queries' work, kept so "load more" redoes none of it: query vectors, filter id sets, rankings.

One bounded LRU (entries and bytes; a lock, since waitress serves from several threads) per engine. Every
key carries the live index version, and the whole cache empties when the version changes: a ranking or
a filter's id set belongs to the index it was computed against, and nothing stale outlives a publish.

Keys are normalised queries: a text query by its whitespace-collapsed text (the tokenizer collapses it
too), an upload by the SHA-256 of its bytes, "more like this" by the image id, a raw vector by its bytes.
A query naming a file on this machine (the CLI's ``--image``, or a combined text term that is a file) has
no key: the file may change between two searches, and the CLI runs one search per process anyway.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import numpy as np

from search.query.kinds import FileQuery, ImageQuery, Query, SimilarQuery, TextQuery, VectorQuery

T = TypeVar("T")


def query_key(query: Query) -> Hashable | None:
    """What identifies the vector of ``query`` (None: not cacheable)."""
    if isinstance(query, TextQuery):
        if query.allow_files:
            return None
        return ("text", query.mode, " ".join(query.text.split()))
    if isinstance(query, ImageQuery):
        return ("image", hashlib.sha256(query.data).hexdigest())
    if isinstance(query, SimilarQuery):
        return ("similar", int(query.image_id), query.t)
    if isinstance(query, VectorQuery):
        vec = np.ascontiguousarray(query.vector, np.float32)
        return ("vector", hashlib.sha256(vec.tobytes()).hexdigest())
    if isinstance(query, FileQuery):
        return None
    raise TypeError(f"not a query: {query!r}")


def nbytes(value: Any) -> int:
    """Rough size of a cached value: arrays by their buffers, anything else by its ``nbytes`` or 1 KiB."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 112
    return int(getattr(value, "nbytes", 1024))


class QueryCache:
    """A thread-safe LRU bounded by entries and bytes, emptied when the index version changes."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._version: str | None = None
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, version: str, key: Hashable) -> Any | None:
        with self._lock:
            self._check_version(version)
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, version: str, key: Hashable, value: Any) -> None:
        """Keep ``value`` (again, with its current size when it grew); a value over the byte bound is not kept."""
        size = nbytes(value)
        with self._lock:
            self._check_version(version)
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if self.max_entries < 1 or size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def get_or_make(self, version: str, key: Hashable | None, make: Callable[[], T]) -> T:
        """The cached value, or ``make()``'s, kept. Two threads missing at once both make it: no lock is held
        while making (an encoder call or a SQL query), so one slow query never holds up the others."""
        if key is None:
            return make()
        found = self.get(version, key)
        if found is not None:
            return found
        value = make()
        self.put(version, key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _check_version(self, version: str) -> None:
        if version != self._version:
            self._items.clear()
            self._bytes = 0
            self._version = version
