"""The index a server queries: the live published version, hot-swapped to a newer one.

Building lives in :mod:`search.vectors.build`, the versioned folder in :mod:`search.vectors.versions`,
one loaded version in :mod:`search.vectors.loaded`; their public names are re-exported here for the
modules that import them from ``search.vectors.live``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import faiss

from search.errors import EngineError
from search.settings import settings
from search.vectors.build import (  # noqa: F401 - re-exported
    RETRAIN_FACTOR,
    TARGET_RECALL,
    Reranker,
    build_streamed,
    can_reuse_training,
    choose_index_spec,
    search,
)
from search.vectors.loaded import LoadedIndex, gpu_available, load_version  # noqa: F401 - re-exported
from search.vectors.versions import KEEP_VERSIONS, IndexDir, VectorSource  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def configure_query_threads(conf: Mapping[str, Any] | None = None) -> None:
    """One FAISS thread per query (GLIMPSE_QUERY_THREADS overrides), for a process that serves queries.

    FAISS's OpenMP pool is process-wide, so this is set where a process starts serving (the web app, the
    CLI's search), never when an Engine is built. A single query vector gains nothing from the pool, and
    on a small CPU that pool (a second OpenMP runtime beside torch's) spins while the text encoder runs:
    measured on 2 cores, a text query took 1.4 s with the default pool and 0.10 s with one thread
    (bench/run.py, BENCHMARKS.md). Index builds happen in the indexer, which never calls this.
    """
    faiss.omp_set_num_threads(int((settings() if conf is None else conf)["GLIMPSE_QUERY_THREADS"]))


class IndexUnreadable(EngineError):
    """The published index cannot be loaded and no earlier version is being served (503: server state)."""

    http_status = 503


# A version that failed to load is tried again after this many seconds (not on every query's check).
RETRY_FAILED_AFTER = 30.0


class LiveIndex:
    """The index a server queries, swapped to a newer published version on demand.

    ``get()`` is cheap (one small file read at most every ``check_every``
    seconds); queries hold the returned object, so a swap never pulls an index
    out from under a running search. A version that fails to load is logged with its cause and
    tried again only after RETRY_FAILED_AFTER; meanwhile the last good version keeps serving, or,
    when there is none, ``get()`` raises IndexUnreadable naming the version and the cause.
    """

    def __init__(self, index_dir: IndexDir, check_every: float = 1.0, conf: Mapping[str, Any] | None = None):
        self.index_dir = index_dir
        self.check_every = check_every
        self._mmap = None if conf is None else bool(conf["GLIMPSE_INDEX_MMAP"])
        self._loaded: LoadedIndex | None = None
        self._failed: tuple[str, str, float] | None = None  # version, cause, when
        self._checked = 0.0
        self._lock = threading.Lock()

    def get(self) -> LoadedIndex | None:
        """The live version; None when nothing is published. IndexUnreadable when the published version
        cannot be loaded and there is no earlier one to serve."""
        now = time.monotonic()
        if self._loaded is None or now - self._checked >= self.check_every:
            self._refresh(now)
        loaded, failed = self._loaded, self._failed
        if loaded is None and failed is not None:
            raise IndexUnreadable(
                f"the published index (version {failed[0]}) is unreadable: {failed[1]}; publish it again "
                "with `glimpse index PATH --rebuild-index` (the server log has the details)"
            )
        return loaded

    @property
    def failure(self) -> str | None:
        """Why the newest published version is not the one served, or None."""
        return None if self._failed is None else f"version {self._failed[0]}: {self._failed[1]}"

    def _refresh(self, now: float) -> None:
        if not self._lock.acquire(blocking=self._loaded is None):
            return  # another thread is loading; keep serving the old one
        try:
            self._checked = now
            for attempt in range(3):
                version = self.index_dir.current_version()
                if not version or (self._loaded is not None and version == self._loaded.version):
                    self._failed = None
                    return
                failed = self._failed
                if failed is not None and failed[0] == version and now - failed[2] < RETRY_FAILED_AFTER:
                    return  # logged when it failed; serving what we have until it is retried
                try:
                    swapped = self._loaded is not None
                    loaded = self.index_dir.load(version, mmap=self._mmap)
                    if loaded is not None and swapped:  # a server already running: page its vectors in now
                        loaded.prefetch()
                    self._loaded, self._failed = loaded, None
                    return
                except Exception as exc:  # any failure to load is reported, never raised mid-query
                    if attempt < 2:  # pruned or replaced between reading `current` and loading: read it again
                        time.sleep(0.05)
                        continue
                    cause = f"{exc.__class__.__name__}: {exc}"
                    self._failed = (version, cause, now)
                    log.error(
                        "index version %s is unreadable (%s); %s",
                        version,
                        cause,
                        f"still serving version {self._loaded.version}" if self._loaded else "no index to serve",
                        exc_info=True,
                    )
        finally:
            self._lock.release()
