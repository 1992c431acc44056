"""Vector reads: a publish's id sets, what changed since a version and float16 chunks (:class:`VectorReads`);
unit vectors of indexed images a chunk at a time for the near-duplicate finder (:class:`VectorChunks`).

Mixed into :class:`search.store.database.Store` (the SQL stays in the store; this file keeps store.py small).
Vectors come back as the stored float16, a bounded chunk at a time: a publish never holds the corpus.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Literal, cast

import numpy as np
from sqlalchemy import Engine as SAEngine
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from search.store.chunks import in_chunks
from search.store.schema import CaptionRow, FrameRow, ImageRow, unpack_vectors

Table = Literal["images", "captions"]
# The tables behind each index: the ``images`` index holds images' vectors and videos' frames' (their ids
# come from one allocator, search.store.writes.allocate_ids, and one vector_seq counter).
_MODELS: dict[str, tuple[type[ImageRow] | type[CaptionRow] | type[FrameRow], ...]] = {
    "images": (ImageRow, FrameRow),
    "captions": (CaptionRow,),
}
CHUNK = 50_000  # rows per chunk: 50 MB of float16 at 512-d


class VectorReads:
    """Vector reads for :mod:`search.vectors.versions`; ``vector_seq IS NOT NULL`` exactly when a row has a vector."""

    engine: SAEngine  # provided by Store

    def session(self) -> Session:  # pragma: no cover - provided by Store
        raise NotImplementedError

    def vector_ids(self, table: Table) -> tuple[np.ndarray, int]:
        """``(ids with a vector, sorted; the highest vector_seq)``, from the ``vector_seq`` index alone.

        The mark is read first: a vector written between the two reads then has a seq above it, and the
        next incremental publish takes it again (read the other way round, it could be missed for good).
        The ids stream from the DB-API cursor into one int64 array: 10M ids as Python ints would be ~400 MB.
        No ``ORDER BY id`` in SQL: with it SQLite scans the table itself (every row's vector: 16 GB at 10M)
        rather than the ``vector_seq`` index, which holds the ids; numpy sorts them instead.
        """
        names = [m.__tablename__ for m in _MODELS[table]]
        with self.engine.connect() as conn:
            cur = cast(sqlite3.Connection, conn.connection.driver_connection).cursor()  # make_engine: pysqlite
            try:
                mark = max(cur.execute(f"SELECT max(vector_seq) FROM {name}").fetchone()[0] or 0 for name in names)
                parts = []
                for name in names:
                    cur.execute(f"SELECT id FROM {name} WHERE vector_seq IS NOT NULL")
                    parts.append(np.fromiter((r[0] for r in cur), dtype=np.int64))
                ids = np.sort(np.concatenate(parts)) if len(parts) > 1 else np.sort(parts[0])
            finally:
                cur.close()
        return ids, int(mark)

    def vector_ids_since(self, table: Table, mark: int) -> np.ndarray:
        """Ids whose vector was written after ``mark`` (new rows, and re-embeds that kept their id), sorted
        (by numpy: an ``ORDER BY id`` makes SQLite scan the whole table instead of the ``vector_seq`` index)."""
        ids: list[int] = []
        with self.session() as s:
            for model in _MODELS[table]:
                ids += s.scalars(select(model.id).where(model.vector_seq > mark)).all()
        return np.sort(np.fromiter(ids, dtype=np.int64, count=len(ids)))

    def iter_vectors(
        self, table: Table, dim: int, ids: np.ndarray | None = None, chunk: int = CHUNK
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, float16 vectors)`` chunks in id order: every row with a vector, or those of ``ids``
        (sorted) that still have one. Each chunk is its own short read over an id range."""
        models = _MODELS[table]
        queries = [(m, select(m.id, m.vector).where(m.vector_seq.is_not(None)).order_by(m.id)) for m in models]
        if ids is None:
            last = 0
            while True:
                with self.session() as s:  # each table's next chunk by id; the lowest ``chunk`` of them go
                    rows = sorted(
                        (r for m, q in queries for r in s.execute(q.where(m.id > last).limit(chunk)).all()),
                        key=lambda r: r[0],
                    )
                exhausted = len(rows) < chunk  # no table had a full chunk left
                rows = rows[:chunk]
                if not rows:
                    return
                yield _unpack(rows, dim)
                last = rows[-1][0]
                if exhausted:
                    return
        ids = np.asarray(ids, dtype=np.int64)
        for i in range(0, len(ids), chunk):
            part = ids[i : i + chunk]
            lo, hi = int(part[0]), int(part[-1])
            rows = []
            with self.session() as s:
                for m, q in queries:
                    if hi - lo < 2 * len(part):  # dense: one range scan, then keep the asked ids
                        found = s.execute(q.where(m.id.between(lo, hi))).all()
                        rows += [r for r, keep in zip(found, np.isin([r[0] for r in found], part)) if keep]
                    else:  # scattered (an incremental publish): by primary key
                        for keys in in_chunks(part.tolist()):
                            rows += s.execute(q.where(m.id.in_(keys))).all()
            if rows:
                if len(models) > 1:
                    rows.sort(key=lambda r: r[0])
                yield _unpack(rows, dim)


def _unpack(rows, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
    return ids, vecs


class VectorChunks:
    """Unit float32 vectors of indexed images in chunks (the near-duplicate finder)."""

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


class PixelPrints:
    """The near-duplicate finder's per-image pixel prints (search.media.pixel_print): read, and the backfill."""

    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def pixel_prints(self, ids: Iterable[int]) -> dict[int, bytes]:
        """``{id: print}`` of those ``ids`` that have one."""
        ids = list(ids)
        out: dict[int, bytes] = {}
        with self.session() as s:
            for chunk in in_chunks(ids):
                q = select(ImageRow.id, ImageRow.pixel_print).where(
                    ImageRow.id.in_(chunk), ImageRow.pixel_print.is_not(None)
                )
                out.update((int(r[0]), cast(bytes, r[1])) for r in s.execute(q))
        return out

    def iter_pixel_prints(self, batch: int = 4096) -> Iterator[tuple[np.ndarray, list[bytes]]]:
        """``(ids, prints)`` of indexed images that have a print, ``batch`` rows at a time, by id (the
        finder's second candidate source reads every print: bounded memory at any corpus size)."""
        q = (
            select(ImageRow.id, ImageRow.pixel_print)
            .where(ImageRow.pixel_print.is_not(None), ImageRow.status == "indexed")
            .order_by(ImageRow.id)
        )
        with self.session() as s:
            for part in s.execute(q.execution_options(yield_per=batch)).partitions(batch):
                ids = np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part))
                yield ids, [cast(bytes, r[1]) for r in part]

    # The partial index holds exactly these rows; SQLite's planner prefers ix_images_status, which would
    # read every indexed row (the vector-laden table at 10M) to count none on a no-op reindex.
    _NO_PRINT = (
        "FROM images INDEXED BY ix_images_no_print WHERE status = 'indexed' AND pixel_print IS NULL AND kind = 'image'"
    )

    def count_without_print(self) -> int:
        """Indexed images that have no pixel print yet (indexed before prints existed, or on the GPU path)."""
        with self.session() as s:
            return int(s.execute(text(f"SELECT count(*) {self._NO_PRINT}")).scalar() or 0)

    def without_print(self, after_id: int, limit: int) -> list[tuple[int, str, str | None]]:
        """``(id, path, real_path)`` of indexed images with no pixel print, by id, after ``after_id``."""
        q = (
            text(f"SELECT id, path, real_path {self._NO_PRINT} AND id > :after ORDER BY id LIMIT :limit")
            .bindparams(after=after_id, limit=limit)
            .columns(ImageRow.id, ImageRow.path, ImageRow.real_path)
        )
        with self.session() as s:
            return [(int(r[0]), r[1], r[2]) for r in s.execute(q)]

    def set_pixel_prints(self, prints: Iterable[tuple[int, bytes]]) -> None:
        """Store prints, one transaction (a batch of the backfill: an interrupted run keeps those done)."""
        with self.session() as s, s.begin():
            for image_id, blob in prints:
                s.execute(update(ImageRow).where(ImageRow.id == image_id).values(pixel_print=blob))
