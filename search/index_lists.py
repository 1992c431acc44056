"""An index's own vectors, one inverted list at a time, and the lists a vector would probe.

For passes that compare every vector with its neighbours (near-duplicates, search.duplicates): instead
of one search per vector (a scalar scan of ``nprobe`` lists each, slow in a FAISS build without SIMD),
each list is compared by one matrix product with every list its vectors probe. Memory stays at a few
lists:

- IVF-SQ8: a list's codes decoded (``ScalarQuantizer.decode`` plus the list's centroid);
- IVF-PQ: the list's ids looked up in the float16 re-rank vectors (memory-mapped), so scores are exact;
- exact (flat) index: its vectors (already in memory), one block while small, else clustered for this
  pass by a spherical k-means on a sample (the lists exist only while the pass runs).

Only vectors in the index are seen: a row embedded after the live version was published is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from search.index_build import Reranker, is_ivf
from search.schema import unit_f32

if TYPE_CHECKING:
    from search.index import LoadedIndex

EXACT_MAX = 20_000  # an exact index this small is one block; a larger one is clustered for the pass


@dataclass
class ListedVectors:
    """``block(l)``: ``(ids, unit float32 vectors)`` of list ``l``; ``probe(x, m)``: the ``m`` lists
    nearest to each row of ``x``, as an IVF search would probe them."""

    count: int
    quantizer: Any  # a FAISS index over the list centroids (None: one list)
    _get: Any

    def block(self, lst: int) -> tuple[np.ndarray, np.ndarray]:
        return self._get(int(lst))

    def __len__(self) -> int:
        return self.count

    def probe(self, x: np.ndarray, m: int) -> np.ndarray:
        if self.quantizer is None:
            return np.zeros((len(x), 1), np.int64)
        return self.quantizer.search(np.ascontiguousarray(x), min(m, self.count))[1]

    def blocks(self, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.block(x) for x in lists]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def listed_vectors(live: LoadedIndex) -> ListedVectors:
    """The live index's vectors by inverted list."""
    spec = live.manifest.get("index_type") or {}
    if is_ivf(spec):
        return _ivf_lists(faiss.extract_index_ivf(live.images), live.image_rerank)
    return _flat_lists(live.images)


def _ivf_lists(ivf: Any, rerank: Reranker | None) -> ListedVectors:
    from faiss.contrib.inspect_tools import get_invlist

    index: Any = faiss.downcast_index(ivf)
    sq: Any = None if rerank is not None else index.sq  # IVF-SQ8 (search.index_build)
    by_residual = bool(getattr(ivf, "by_residual", False))
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist) if by_residual and sq is not None else None

    def get(lst: int) -> tuple[np.ndarray, np.ndarray]:
        ids, codes = get_invlist(ivf.invlists, lst)
        if len(ids) == 0:
            return ids, np.zeros((0, ivf.d), np.float32)
        if rerank is not None:  # compact codes: the exact vectors the searches re-rank against
            return ids, unit_f32(np.asarray(rerank.vectors[np.searchsorted(rerank.ids, ids)]))
        x = sq.decode(codes)
        if centroids is not None:
            x = x + centroids[lst]
        return ids, unit_f32(x)

    return ListedVectors(int(ivf.nlist), ivf.quantizer, get)


def _flat_lists(flat_map: faiss.Index) -> ListedVectors:
    id_map: Any = faiss.downcast_index(flat_map)  # IndexIDMap2 over IndexFlatIP (search.index_build)
    n = int(id_map.ntotal)
    x = faiss.downcast_index(id_map.index).reconstruct_n(0, n) if n else np.zeros((0, id_map.d), np.float32)
    ids = faiss.vector_to_array(id_map.id_map).astype(np.int64)
    if n <= EXACT_MAX:
        return ListedVectors(1, None, lambda _lst: (ids, x))
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    km = faiss.Kmeans(x.shape[1], nlist, niter=10, spherical=True, seed=1, max_points_per_centroid=64)
    km.train(x)
    _, assign = km.index.search(x, 1)
    order = np.argsort(assign[:, 0], kind="stable")
    bounds = np.searchsorted(assign[order, 0], np.arange(nlist + 1))

    def get(lst: int) -> tuple[np.ndarray, np.ndarray]:
        rows = order[bounds[lst] : bounds[lst + 1]]
        return ids[rows], x[rows]

    return ListedVectors(nlist, km.index, get)
