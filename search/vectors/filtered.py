"""Nearest images among those a filter keeps, at a cost that follows the matches, not the collection.

The filter's ids come from an indexed SQL query (``Store.filtered_ids``). Then:

- no match: nothing to search (no FAISS call at all);
- an exact (flat) index: FAISS with an ID selector (``SearchParameters(sel=...)``), exact by construction;
- an IVF index and few matches (``GLIMPSE_FILTER_EXACT_MAX``): exact scores over just those rows' stored
  vectors, read in one batched query and kept. An IVF scan with a selector costs ~100 ns per scanned
  entry, and keeping 1/share of the lists' recall means scanning ~nprobe * N / (nlist * share) entries:
  at 1M a filter keeping 10k rows scanned 100k entries (10 ms), where the product over its 10k vectors
  takes ~1 ms;
- an IVF index and many matches: FAISS with an ID selector and nprobe raised by the filter's selectivity
  (a filter keeping 10% of the rows probes 10x the lists): an IVF with a selector scans only the probed
  lists, and at the usual nprobe a selective filter leaves it fewer than k matches and a poorer recall.
  The selector is tested before any distance is computed, so the distance work stays what an unfiltered
  query does. A page still short of its matches is searched again over every list.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import faiss
import numpy as np

from search.settings import settings
from search.stages import stage

if TYPE_CHECKING:
    from search.store.database import Store
    from search.vectors.live import LoadedIndex


class Ranked(NamedTuple):
    """Image ids best first with their scores, and whether no further ones exist."""

    ids: np.ndarray
    scores: np.ndarray
    exhausted: bool


def index_search(live: LoadedIndex, vec: np.ndarray, k: int, params: faiss.SearchParameters | None = None) -> Ranked:
    """The image index's one FAISS call, through ``LoadedIndex.search`` (which re-ranks compact codes)."""
    with stage("faiss"):
        scores, ids = live.search(np.ascontiguousarray(vec[None, :], np.float32), k, params)
    keep = ids[0] >= 0
    return Ranked(ids[0][keep].astype(np.int64), scores[0][keep], exhausted=False)


class Allowed:
    """The ids a filter keeps, as a cache can hold them at any size: a packed bitmap over the id range (1 bit
    an id: 1.25 MB at 10M), plus the sorted ids while few enough for the exact search to read their vectors.
    As sorted int64 ids, a filter keeping 10M rows was 80 MB: over the query cache's bound, so it was never
    kept and each query recomputed it (10 s at 10M)."""

    def __init__(self, ids: np.ndarray, keep_ids: int):
        ids = np.asarray(ids, dtype=np.int64)
        self.count = len(ids)
        self.ids = ids if len(ids) <= keep_ids else None
        bits = np.zeros(int(ids[-1]) + 1 if len(ids) else 0, dtype=bool)
        bits[ids] = True
        self.bits = np.packbits(bits, bitorder="little")

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + (self.ids.nbytes if self.ids is not None else 0))

    def selector(self) -> faiss.IDSelector:
        """A FAISS bitmap selector over the packed bits, tested in O(1) per scanned entry."""
        selector = faiss.IDSelectorBitmap(len(self.bits), faiss.swig_ptr(self.bits))
        selector.referenced_bits = self.bits  # type: ignore[attr-defined]  # a raw pointer: keep the array alive
        return selector


def allowed_of(ids: np.ndarray | None, dim: int) -> Allowed | None:
    """The filter's ids, kept as ids too when few enough for the exact search: at most
    GLIMPSE_FILTER_EXACT_MAX, and their float32 vectors at most half the query cache (which keeps them)."""
    if ids is None:
        return None
    conf = settings()
    fits = int(conf["GLIMPSE_QUERY_CACHE_MB"] * 2**20) // 2 // (4 * max(1, dim))
    return Allowed(ids, min(conf["GLIMPSE_FILTER_EXACT_MAX"], fits))


class Subset(NamedTuple):
    """The stored vectors of a filter's rows (kept with its ids, so later queries on it are one product)."""

    ids: np.ndarray
    vectors: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.vectors.nbytes)


def subset_of(store: Store, allowed: Allowed, dim: int) -> Subset:
    """Read the vectors of ``allowed`` (few: its ids are kept; ids without a vector are left out)."""
    assert allowed.ids is not None, "the exact search is for filters keeping few rows"
    with stage("exact"):
        found = store.vectors_of(allowed.ids.tolist(), dim)
    if not found:
        return Subset(*_empty()[:1], np.zeros((0, dim), np.float32))
    return Subset(np.fromiter(found, np.int64, len(found)), np.stack(list(found.values())))


def ranked(
    live: LoadedIndex, vec: np.ndarray, fetch: int, allowed: Allowed | None, subset: Callable[[], Subset]
) -> Ranked:
    """The best ``fetch`` images of the index, or only of ``allowed`` when a filter is set;
    ``subset()`` gives the stored vectors of ``allowed`` (asked only for the exact search of a few)."""
    total = live.images.ntotal
    if allowed is None:
        found = index_search(live, vec, min(fetch, total)) if total else Ranked(*_empty(), False)
        return found._replace(exhausted=fetch >= total)
    if len(allowed) == 0 or total == 0:
        return Ranked(*_empty(), exhausted=True)
    asked, fetch = fetch, min(fetch, len(allowed))
    ivf = _ivf(live.images)
    if ivf is None:
        found = index_search(live, vec, fetch, _params(allowed.selector()))
        return found._replace(exhausted=len(found.ids) < asked)
    if allowed.ids is not None:  # few (GLIMPSE_FILTER_EXACT_MAX): exact over their stored vectors
        found = _exact(subset(), vec, fetch)
        return found._replace(exhausted=found.exhausted or asked >= len(allowed))
    selector = allowed.selector()
    share = min(1.0, len(allowed) / total)
    nprobe = min(ivf.nlist, math.ceil(ivf.nprobe / share))
    found = index_search(live, vec, fetch, _params(selector, nprobe))
    if len(found.ids) < fetch and nprobe < ivf.nlist:
        found = index_search(live, vec, fetch, _params(selector, ivf.nlist))
    return found._replace(exhausted=len(found.ids) < asked)


def _exact(subset: Subset, vec: np.ndarray, fetch: int) -> Ranked:
    with stage("exact"):
        scores = subset.vectors @ np.asarray(vec, np.float32)
        order = np.argsort(-scores, kind="stable")[:fetch]
    return Ranked(subset.ids[order], scores[order].astype(np.float32), exhausted=len(order) < fetch)


def _params(selector: faiss.IDSelector, nprobe: int | None = None) -> faiss.SearchParameters:
    """Search parameters with ``selector`` (and ``nprobe`` for an IVF); the caller keeps the selector alive."""
    if nprobe is None:
        params = faiss.SearchParameters()
    else:
        params = ivf_params = faiss.SearchParametersIVF()
        ivf_params.nprobe = nprobe
    params.sel = selector
    return params


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.int64), np.zeros(0, np.float32)
