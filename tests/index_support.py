"""Index versions from vectors held in memory, for tests: the product publishes from the store (indexer/publish.py).

``publish_arrays`` is a full build through the same ``IndexDir.publish_sources`` the indexer uses; ``build_index``
builds one index without writing a version.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from search.vectors.build import build_streamed
from search.vectors.versions import IndexDir


@dataclass
class ArraySource:
    """Vectors already in memory: no write marks, so always a full build."""

    vectors: np.ndarray
    ids: np.ndarray
    chunk: int = 50_000

    def snapshot(self) -> tuple[np.ndarray, int | None]:
        return np.sort(np.asarray(self.ids, dtype=np.int64)), None

    def changed_since(self, mark: int) -> np.ndarray:
        raise NotImplementedError

    def chunks(self, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.argsort(self.ids, kind="stable")
        pos = order[np.searchsorted(np.asarray(self.ids)[order], ids)]
        for i in range(0, len(pos), self.chunk):
            p = pos[i : i + self.chunk]
            yield np.asarray(self.ids, dtype=np.int64)[p], self.vectors[p]


def publish_arrays(
    index_dir: IndexDir,
    image_vectors: np.ndarray,
    image_ids: np.ndarray,
    caption_vectors: np.ndarray,
    caption_ids: np.ndarray,
    manifest: dict,
    spec: dict | None = None,
) -> str:
    """Publish vectors held in memory (a full build); the new version's name."""
    return index_dir.publish_sources(
        ArraySource(image_vectors, image_ids), ArraySource(caption_vectors, caption_ids), manifest, spec
    )


def build_index(
    vectors: np.ndarray, ids: np.ndarray, spec: dict | None = None, trained: faiss.Index | None = None
) -> tuple[faiss.Index, dict, faiss.Index | None]:
    """One index over vectors in memory: ``(index, spec, trained_empty)``; compact-code types need their
    re-rank file, so publish those with :func:`publish_arrays`."""
    src = ArraySource(np.asarray(vectors), np.asarray(ids, dtype=np.int64))
    sorted_ids, _ = src.snapshot()
    x = np.asarray(vectors, dtype=np.float32)

    def pick(m: int) -> np.ndarray:
        return np.ascontiguousarray(x[np.random.default_rng(0).choice(len(x), min(m, len(x)), replace=False)])

    built = build_streamed(src.chunks(sorted_ids), len(sorted_ids), np.asarray(vectors).shape[-1], spec, trained, pick)
    return built.index, built.spec, built.trained
