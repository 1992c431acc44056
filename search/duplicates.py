"""Near-duplicate groups over the live index: images whose vectors are within a cosine threshold.

Every stored vector (read from the store a chunk at a time, so memory stays bounded at any
corpus size and any index type, IVF included) is searched against the live index for its
``NEIGHBOURS`` nearest; pairs at or above the threshold are edges, and the groups are the
connected components of that graph (scipy's ``connected_components``). Capping the neighbours
keeps the work and the edge list linear in the corpus even at a threshold so low that everything
matches: a group larger than the cap is still found whole, through chains of links.

Read-only: nothing is deleted; a person decides what to do with each group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from search.errors import InvalidValue
from search.results import SearchResult, to_result

if TYPE_CHECKING:
    import faiss

    from search.store import Store

NEIGHBOURS = 16
CHUNK = 4096
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
    index: faiss.Index, chunks: Iterable[tuple[np.ndarray, np.ndarray]], threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, score)`` arrays: pairs of live ids with a >= threshold neighbour link, a < b.

    A stored vector counts only when the index finds the vector itself: a row embedded after the
    live version was published is not in it and is not grouped (searches do not see it either).
    """
    k = min(NEIGHBOURS + 1, int(index.ntotal))
    a_parts, b_parts, s_parts = [], [], []
    if k == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    for ids, vecs in chunks:
        scores, found = index.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
        live = (found == ids[:, None]).any(axis=1)
        keep = (scores >= threshold) & (found >= 0) & (found != ids[:, None]) & live[:, None]
        rows, cols = np.nonzero(keep)
        a, b = ids[rows], found[rows, cols]
        a_parts.append(np.minimum(a, b))
        b_parts.append(np.maximum(a, b))
        s_parts.append(scores[rows, cols])
    return np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)


def components(a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> list[tuple[list[int], float]]:
    """Connected components of the pair graph: ``(ids, weakest link)`` for each group of 2 or more."""
    if len(a) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
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


def find_duplicates(store: Store, index: faiss.Index, dim: int, threshold: float) -> list[DuplicateGroup]:
    """Groups of near-duplicate indexed images, most images first, then the closest (highest weakest link)."""
    pairs = similar_pairs(index, store.iter_image_vectors(dim, CHUNK), check_threshold(threshold))
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
