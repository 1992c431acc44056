"""Stored image vectors a chunk at a time (the near-duplicate finder reads every vector without
holding them all): a mixin of :class:`search.store.Store`, like the rest of the store the only SQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from search.schema import ImageRow, unpack_vectors


class VectorChunks:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def iter_image_vectors(self, dim: int, batch: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, unit vectors)`` of indexed images, ``batch`` rows at a time, by id."""
        q = (
            select(ImageRow.id, ImageRow.vector)
            .where(ImageRow.vector.is_not(None), ImageRow.status == "indexed")
            .order_by(ImageRow.id)
        )
        with self.session() as s:
            for part in s.execute(q.execution_options(yield_per=batch)).partitions(batch):
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                yield ids, unpack_vectors([cast(bytes, r[1]) for r in part], dim)  # not NULL: selected by it
