"""Near-duplicate groups over the live index: images whose vectors are within a cosine threshold.

The live index's own vectors are compared list by list (search.index_lists): each inverted list
with its ``GLIMPSE_DUPLICATES_NPROBE`` nearest lists, by one matrix product, since a near-duplicate
lies so close to its original that both fall in the same list or a neighbouring one (an exact index
is one block while small, else clustered for the pass). Each vector keeps its ``NEIGHBOURS`` best
links at or above the threshold; the groups are the connected components of those links (scipy's
``connected_components``). Capping the links keeps the work and the edge list linear in the corpus
even at a threshold so low that everything matches: a group larger than the cap is still found whole,
through chains of links. Scores are cosines of the vectors the index holds: exact for exact and
IVF-PQ indexes (the float16 re-rank vectors), within ~0.002 for IVF-SQ8's 8-bit codes.
bench/duplicates.py measures the cost and the planted copies found.

Read-only: nothing is deleted; a person decides what to do with each group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from search.errors import InvalidValue
from search.index_lists import listed_vectors
from search.results import SearchResult, to_result
from search.settings import settings

if TYPE_CHECKING:
    from search.index import LoadedIndex
    from search.store import Store

NEIGHBOURS = 16
SUB = 512  # rows of a list per matrix product (bounds the scores held at once)
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
    live: LoadedIndex, threshold: float, per_list: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, score)`` arrays: pairs of ids in the live index with a >= threshold link, a < b
    (each vector keeps its ``NEIGHBOURS`` best links). Each inverted list is compared, by one matrix
    product, with every list that one of its vectors probes: its ``per_list`` (default
    ``GLIMPSE_DUPLICATES_NPROBE``) nearest centroids."""
    probes = int(per_list or settings()["GLIMPSE_DUPLICATES_NPROBE"])
    listed = listed_vectors(live)
    a_parts, b_parts, s_parts = [], [], []
    for lst in range(len(listed)):
        ids, x = listed.block(lst)
        if not len(ids):
            continue
        # Every list one of these vectors probes (its nearest centroids, as an IVF search would): a superset
        # of each vector's own probes, compared in one product.
        probed = listed.probe(x, probes)
        near_ids, near = listed.blocks(np.union1d(probed[probed >= 0], [lst]))
        for start in range(0, len(ids), SUB):
            part = ids[start : start + SUB]
            scores = x[start : start + SUB] @ near.T
            scores[part[:, None] == near_ids[None, :]] = -np.inf  # not a link to itself
            found = np.broadcast_to(near_ids, scores.shape)
            if scores.shape[1] > NEIGHBOURS:
                top = np.argpartition(-scores, NEIGHBOURS - 1, axis=1)[:, :NEIGHBOURS]
                scores, found = np.take_along_axis(scores, top, 1), np.take_along_axis(found, top, 1)
            rows, cols = np.nonzero(scores >= threshold)
            a, b = part[rows], found[rows, cols]
            a_parts.append(np.minimum(a, b))
            b_parts.append(np.maximum(a, b))
            s_parts.append(scores[rows, cols].astype(np.float32))
    if not a_parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
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


def find_duplicates(
    store: Store, live: LoadedIndex, threshold: float, nprobe: int | None = None
) -> list[DuplicateGroup]:
    """Groups of near-duplicate indexed images, most images first, then the closest (highest weakest link)."""
    pairs = similar_pairs(live, check_threshold(threshold), nprobe)
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
