"""Near-duplicate groups over the live index: images whose vectors are within a cosine threshold.

Every stored vector (read from the store a chunk at a time, so memory stays bounded at any
corpus size and any index type, IVF included) is searched against the live index for its
``NEIGHBOURS`` nearest; pairs at or above the threshold are edges, and the groups are the
connected components of that graph (scipy's ``connected_components``). Capping the neighbours
keeps the work and the edge list linear in the corpus even at a threshold so low that everything
matches: a group larger than the cap is still found whole, through chains of links.

An IVF index is searched with few lists (``GLIMPSE_DUPLICATES_NPROBE``, not the nprobe tuned for
queries): a near-duplicate lies so close to its original that both fall in the same list or the
next one, and a pair is found from either side; bench/duplicates.py measures the pairs kept. An
exact index over more than ``EXACT_MAX`` images is searched the same way through a transient
IVF-Flat over its own vectors (all pairs would be quadratic).
Where the index stores compact codes (IVF-PQ), candidates are scored exactly against the stored
float16 vectors before the threshold applies, as every search re-ranks them.

Read-only: nothing is deleted; a person decides what to do with each group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search.errors import InvalidValue
from search.id_arrays import unique_inverse
from search.index_build import is_ivf
from search.results import SearchResult, to_result
from search.schema import unit_f32
from search.settings import settings

if TYPE_CHECKING:
    import faiss

    from search.index import LoadedIndex
    from search.store import Store

NEIGHBOURS = 16
CHUNK = 4096
EXACT_MAX = 20_000  # an exact index larger than this is grouped through a transient IVF
SUB = 512  # queries per FAISS call (bounds the candidates' vectors held at once)
# Measured (README, "Near-duplicates"): resized, recompressed and lightly cropped copies of a photo
# score above this with the shipped model; different pictures below it.
DEFAULT_THRESHOLD = 0.96


@dataclass
class DuplicateGroup:
    """Images within the threshold of each other (through chains of links), best kept first."""

    images: list[SearchResult]
    min_score: float  # the weakest link that joined the group

    def to_dict(self) -> dict:
        keys = ("id", "path", "size", "width", "height", "date")
        return {"images": [{k: getattr(r, k) for k in keys} for r in self.images], "min_score": self.min_score}


def check_threshold(threshold: float) -> float:
    """A cosine similarity in (0, 1]; InvalidValue (a 400, exit 1) otherwise, NaN included."""
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise InvalidValue("threshold must be a number in (0, 1]")
    return t


def similar_pairs(
    live: LoadedIndex, chunks: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, score)`` arrays: pairs of live ids with a >= threshold neighbour link, a < b.

    A stored vector counts only when the index finds the vector itself: a row embedded after the
    live version was published is not in it and is not grouped (searches do not see it either).
    ``nprobe``: lists an IVF searches (default ``GLIMPSE_DUPLICATES_NPROBE``, at most the tuned one).
    """
    import faiss

    index, rerank = live.images, live.image_rerank
    n = int(index.ntotal)
    # Compact codes rank roughly: take more candidates, then keep the exact best.
    k = min(NEIGHBOURS + 1, n)
    kk = min(n, 2 * k) if rerank is not None else k
    a_parts, b_parts, s_parts = [], [], []
    if k == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    lists = int(nprobe or settings()["GLIMPSE_DUPLICATES_NPROBE"])
    spec = live.manifest.get("index_type") or {}
    params: faiss.SearchParameters | None = None
    if is_ivf(spec):
        params = faiss.SearchParametersIVF(nprobe=max(1, min(lists, int(spec.get("nprobe") or lists))))  # type: ignore[call-arg]
    elif n > EXACT_MAX:
        index, params = _transient_ivf(index, lists)
    for ids, vecs in chunks:
        for start in range(0, len(ids), SUB):
            part, q = ids[start : start + SUB], unit_f32(vecs[start : start + SUB])
            scores, found = index.search(q, kk, params=params)
            if rerank is not None:
                scores, found = rerank.rescore(q, found, k)
            live_row = (found == part[:, None]).any(axis=1)
            keep = (scores >= threshold) & (found >= 0) & (found != part[:, None]) & live_row[:, None]
            rows, cols = np.nonzero(keep)
            a, b = part[rows], found[rows, cols]
            a_parts.append(np.minimum(a, b))
            b_parts.append(np.maximum(a, b))
            s_parts.append(scores[rows, cols])
    if not a_parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)


def _transient_ivf(flat_map: faiss.Index, nprobe: int) -> tuple[faiss.Index, faiss.SearchParametersIVF]:
    """An IVF-Flat over an exact index's own vectors, for this pass only: every image searched against
    every other is quadratic (100k images: 5e12 multiply-adds), a few lists per image is not. Vectors
    are kept exactly, so the scores compared with the threshold are exact cosines."""
    import faiss

    id_map: Any = faiss.downcast_index(flat_map)  # IndexIDMap2 over IndexFlatIP (search.index_build)
    x = faiss.downcast_index(id_map.index).reconstruct_n(0, id_map.ntotal)
    ids = faiss.vector_to_array(id_map.id_map).astype(np.int64)
    nlist = 2 ** round(math.log2(math.sqrt(len(x))))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    rows = np.random.default_rng(0).choice(len(x), min(len(x), 64 * nlist), replace=False)
    ivf.train(np.ascontiguousarray(x[np.sort(rows)]))
    ivf.add_with_ids(x, ids)
    return ivf, faiss.SearchParametersIVF(nprobe=min(nprobe, nlist))  # type: ignore[call-arg]


def components(a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> list[tuple[list[int], float]]:
    """Connected components of the pair graph: ``(ids, weakest link)`` for each group of 2 or more."""
    if len(a) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = unique_inverse(np.concatenate([a, b]))
    ia, ib = inverse[: len(a)], inverse[len(a) :]
    graph = coo_matrix((np.ones(len(a), np.int8), (ia, ib)), shape=(len(nodes), len(nodes)))
    count, labels = connected_components(graph, directed=False)
    weakest = np.full(count, np.inf)
    np.minimum.at(weakest, labels[ia], scores)
    members: list[list[int]] = [[] for _ in range(count)]
    for node, label in zip(nodes.tolist(), labels.tolist()):
        members[label].append(node)
    return [(ids, float(weakest[label])) for label, ids in enumerate(members) if len(ids) > 1]


def _keep_first(r: SearchResult) -> tuple:
    """Largest first (pixel count, then bytes), then newest (capture date, else mtime)."""
    return (-((r.width or 0) * (r.height or 0)), -(r.size or 0), _neg(r.date or ""), r.id)


def _neg(date: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in date)


def find_duplicates(
    store: Store, live: LoadedIndex, threshold: float, nprobe: int | None = None
) -> list[DuplicateGroup]:
    """Groups of near-duplicate indexed images, most images first, then the closest (highest weakest link)."""
    pairs = similar_pairs(live, store.iter_image_vectors(live.dim, CHUNK), check_threshold(threshold), nprobe)
    found = components(*pairs)
    rows = store.get_images([i for ids, _ in found for i in ids])
    groups = []
    for ids, weakest in found:
        images = [to_result(rows[i], None, None) for i in ids if i in rows and rows[i].status == "indexed"]
        if len(images) > 1:  # a member deleted since the index was published leaves the others
            images.sort(key=_keep_first)
            groups.append(DuplicateGroup(images, round(weakest, 4)))
    groups.sort(key=lambda g: (-len(g.images), -g.min_score, g.images[0].id))
    return groups
