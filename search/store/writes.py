"""The indexer's SQL: what the diff reads of every row and the writes of an index run.

Part of the store (:class:`search.store.database.Store` mixes :class:`IndexerWrites` in); like it, the only
place these tables are written.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, cast

import numpy as np
from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session

from search.store.chunks import in_chunks
from search.store.fts import drop_fts, ids_of_paths, sync_fts
from search.store.schema import CaptionRow, FrameRow, ImageRow, OcrImageRow, fs_str, pack_vector

# ---------------------------------------------------------------- indexer writes
#
# What the indexer reads and writes, named for what it does. Methods taking ``s`` run in the
# caller's transaction (``Store.transaction()``), which also commits the job's counts.

# What the diff needs of one stored image row: (id, size, mtime, content hash,
# done = has a vector or failed for good, root id, canonical location, failed, sidecar stat).
# A plain tuple: the nightly no-op run builds one per file, and 100k dataclasses
# cost more than the scan.
RowState = tuple[int, int, float, "str | None", int, "int | None", "str | None", int, "str | None"]
# Final ints, so a type checker knows the type of ``state[SIZE]``.
ID: Final = 0
SIZE: Final = 1
MTIME: Final = 2
HASH: Final = 3
DONE: Final = 4
ROOT: Final = 5
REAL: Final = 6
FAILED: Final = 7
SIDECAR: Final = 8

# The keyword index (search.store.fts) follows every write below that changes an image's name, folder,
# captions or status, in the same transaction.

# What a copy takes over of the text read in its original (all but the image id).
OCR_COPIED = ("engine", "content_hash", "read_at", "text", "lines", "error")

# What ``Store.transaction()`` yields: pass it back to the methods that take ``s``.
Transaction = Session


def next_vector_seq(s: Session, model: type[ImageRow] | type[CaptionRow]) -> int:
    """The ``vector_seq`` of a write that stores vectors: one past the table's highest (an index lookup).
    Images and video frames feed one index, so they share one counter."""
    if model is CaptionRow:
        return int(s.scalar(select(func.max(CaptionRow.vector_seq))) or 0) + 1
    return max_image_seq(s) + 1


def max_image_seq(s: Session) -> int:
    """The highest ``vector_seq`` over images and frames (two index lookups)."""
    return max(int(s.scalar(select(func.max(m.vector_seq))) or 0) for m in (ImageRow, FrameRow))


def allocate_ids(s: Session, n: int) -> int:
    """The first of ``n`` fresh row ids for images, videos or frames, in the caller's write transaction.

    Frames take their ids from the images' own range (they share the live FAISS index, whose filter bitmaps
    span the id range: a disjoint high range would make them huge), so every insert into either table takes
    its ids here: one past the highest of both (two primary-key lookups; the indexer is the only writer).
    """
    top = max(int(s.scalar(select(func.max(m.id))) or 0) for m in (ImageRow, FrameRow))
    return top + 1


def _with_seq(values: dict, seq: int) -> dict:
    if "vector" not in values:
        return values
    return dict(values, vector_seq=None if values["vector"] is None else seq)


class IndexerWrites:
    """The indexer's statements; mixed into :class:`Store`."""

    engine: SAEngine

    def session(self) -> Session:  # pragma: no cover - provided by Store
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: statements given its session commit together, or not at all."""
        with self.session() as s, s.begin():
            yield s

    def file_states(self) -> dict[str, RowState]:
        """Every image row by path, loaded once: the diff's only read of the database.

        Straight through the DB-API cursor: ORM row objects for every file would
        make the no-op nightly run several times slower.
        """
        with self.engine.connect() as conn:
            cur = cast(sqlite3.Connection, conn.connection.driver_connection).cursor()  # make_engine: pysqlite
            try:
                cur.execute(
                    "SELECT path, id, size, mtime, content_hash, "
                    "vector IS NOT NULL OR status IN ('failed', 'skipped') OR (kind = 'video' AND status = 'indexed'), "
                    "root_id, real_path, status = 'failed', sidecar FROM images"
                )
                # A BLOB path is a file name that is not UTF-8 (search.store.schema.FsPath).
                return {
                    fs_str(r[0]): r[1:] if r[7].__class__ is not bytes else (*r[1:7], fs_str(r[7]), *r[8:]) for r in cur
                }
            finally:
                cur.close()

    @staticmethod
    def set_file_stat(s: Session, row_id: int, size: int, mtime: float, real_path: str | None) -> None:
        """Same bytes, new mtime (a touch): the row and its vector stay."""
        s.execute(update(ImageRow).where(ImageRow.id == row_id).values(size=size, mtime=mtime, real_path=real_path))

    @staticmethod
    def set_real_path(s: Session, row_id: int, real_path: str | None) -> None:
        s.execute(update(ImageRow).where(ImageRow.id == row_id).values(real_path=real_path))

    @staticmethod
    def move_image(
        s: Session, row_id: int, path: str, real_path: str | None, root_id: int, size: int, mtime: float
    ) -> None:
        """The file moved: its row (id, vector, captions) follows it."""
        s.execute(
            update(ImageRow)
            .where(ImageRow.id == row_id)
            .values(path=path, real_path=real_path, root_id=root_id, size=size, mtime=mtime)
        )
        sync_fts(s, [row_id])

    @staticmethod
    def copy_image(
        s: Session,
        src_id: int,
        path: str,
        real_path: str | None,
        root_id: int | None,
        size: int,
        mtime: float,
        content_hash: str,
    ) -> None:
        """A new file with the bytes of row ``src_id``: a new row reusing its metadata and vector; a video's
        copy reuses its frames (their vectors copied under fresh ids), so no video is read twice, and an
        image's copy the text read in it (its keyword row follows by trigger), so it is not read again."""
        src = s.get_one(ImageRow, src_id)
        row = ImageRow(
            id=allocate_ids(s, 1),
            path=path,
            real_path=real_path,
            root_id=root_id,
            size=size,
            mtime=mtime,
            content_hash=content_hash,
            width=src.width,
            height=src.height,
            format=src.format,
            taken_at=src.taken_at,
            status="indexed",
            vector=src.vector,
            pixel_print=src.pixel_print,
            vector_seq=next_vector_seq(s, ImageRow) if src.vector is not None else None,
            kind=src.kind,
            duration=src.duration,
            codec=src.codec,
            poster=src.poster,
        )
        s.add(row)
        s.flush()
        if src.kind == "video":
            frames = s.execute(
                select(FrameRow.time, FrameRow.vector).where(FrameRow.video_id == src_id).order_by(FrameRow.time)
            ).all()
            if frames:
                first, seq = allocate_ids(s, len(frames)), next_vector_seq(s, ImageRow)
                s.execute(
                    insert(FrameRow),
                    [
                        {"id": first + i, "video_id": row.id, "time": t, "vector": v, "vector_seq": seq}
                        for i, (t, v) in enumerate(frames)
                    ],
                )
        read = select(literal(row.id), *(getattr(OcrImageRow, c) for c in OCR_COPIED)).where(
            OcrImageRow.image_id == src_id
        )
        s.execute(insert(OcrImageRow).from_select(["image_id", *OCR_COPIED], read))
        sync_fts(s, [row.id])

    @staticmethod
    def write_images(s: Session, new_rows: Sequence[dict], updates: Iterable[tuple[int, dict]] = ()) -> None:
        """Insert ``new_rows`` (one executemany: ORM objects cost more than the encoder on a GPU)
        and set ``(row id, column values)`` on existing rows. Rows given a vector get this write's
        ``vector_seq`` (rows losing theirs get NULL): what the next incremental publish re-adds."""
        updates = list(updates)
        if any("vector" in v for v in (*new_rows, *(u for _, u in updates))):
            seq = next_vector_seq(s, ImageRow)
            new_rows = [_with_seq(v, seq) for v in new_rows]
            updates = [(i, _with_seq(v, seq)) for i, v in updates]
        for image_id, values in updates:
            s.execute(update(ImageRow).where(ImageRow.id == image_id).values(**values))
        if new_rows:
            first = allocate_ids(s, len(new_rows))
            s.execute(insert(ImageRow), [dict(r, id=first + i) for i, r in enumerate(new_rows)])
        changed = [image_id for image_id, _ in updates]
        sync_fts(s, changed + (ids_of_paths(s, [r["path"] for r in new_rows]) if new_rows else []))

    @staticmethod
    def write_video(
        s: Session, row_id: int | None, values: dict, frames: Sequence[tuple[float, np.ndarray]] = ()
    ) -> int:
        """Insert (``row_id`` None) or update a video's row with ``values`` and replace its frames with
        ``frames`` (``(time, vector)``, any order), in the caller's transaction: a crash keeps the video
        whole or as it was. Returns the row id. The frames share the images' ids and ``vector_seq``."""
        values = dict(values, kind="video", vector=None, vector_seq=None, pixel_print=None)
        if row_id is None:
            row_id = allocate_ids(s, 1)
            s.execute(insert(ImageRow), [dict(values, id=row_id)])
        else:
            s.execute(update(ImageRow).where(ImageRow.id == row_id).values(**values))
            s.execute(delete(FrameRow).where(FrameRow.video_id == row_id))
        if frames:
            first, seq = allocate_ids(s, len(frames)), next_vector_seq(s, ImageRow)
            rows = [
                {"id": first + i, "video_id": row_id, "time": float(t), "vector": pack_vector(v), "vector_seq": seq}
                for i, (t, v) in enumerate(sorted(frames, key=lambda f: f[0]))
            ]
            s.execute(insert(FrameRow), rows)
        sync_fts(s, [row_id])
        return row_id

    @staticmethod
    def delete_images(s: Session, ids: Sequence[int]) -> None:
        """Rows of files that are gone, with their captions."""
        ids = list(ids)
        for chunk in in_chunks(ids):
            s.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(chunk)))
            s.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)))
        drop_fts(s, ids)

    def add_captions(self, wanted: dict[str, list[tuple[str, str]]]) -> list[str]:
        """Store ``{image path: [(text, source)]}`` captions not stored yet; returns the paths
        that name no indexed image."""
        with self.session() as s, s.begin():
            ids = (
                dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(list(wanted)))).all())
                if len(wanted) < 30_000
                else dict(s.execute(select(ImageRow.path, ImageRow.id)).all())
            )
            missing = [p for p in wanted if p not in ids]
            have: set[tuple[int, str]] = (
                set(
                    s.execute(
                        select(CaptionRow.image_id, CaptionRow.text).where(CaptionRow.image_id.in_(list(ids.values())))
                    ).all()
                )
                if len(ids) < 30_000
                else set(s.execute(select(CaptionRow.image_id, CaptionRow.text)).all())
            )
            captioned: set[int] = set()
            for path, caps in wanted.items():
                image_id = ids.get(path)
                if image_id is None:
                    continue
                for text, source in caps:
                    if (image_id, text) not in have:
                        have.add((image_id, text))
                        s.add(CaptionRow(image_id=image_id, text=text, source=source))
                        captioned.add(image_id)
            s.flush()
            sync_fts(s, captioned)
        return missing

    def set_sidecar_captions(self, found: dict[str, tuple[str | None, list[str]]]) -> int:
        """``{image path: (sidecar stat, its captions)}``: each image's sidecar captions become these (other
        sources' captions stay) and its ``sidecar`` this stat, in one transaction. Returns how many
        caption rows went (their vectors leave the caption index at the next publish)."""
        removed = 0
        with self.session() as s, s.begin():
            paths = list(found)
            for chunk in in_chunks(paths):
                ids = dict(s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(chunk))).all())
                have: dict[int, dict[str, tuple[int, str]]] = {}
                for image_id, cid, text, source in s.execute(
                    select(CaptionRow.image_id, CaptionRow.id, CaptionRow.text, CaptionRow.source).where(
                        CaptionRow.image_id.in_(list(ids.values()))
                    )
                ):
                    have.setdefault(image_id, {})[text] = (cid, source)
                stale: list[int] = []
                changed: set[int] = set()
                for path, image_id in ids.items():
                    stat, captions = found[path]
                    old = have.get(image_id, {})
                    gone = [cid for text, (cid, source) in old.items() if source == "sidecar" and text not in captions]
                    new = [t for t in dict.fromkeys(captions) if t not in old]
                    s.add_all(CaptionRow(image_id=image_id, text=t, source="sidecar") for t in new)
                    stale.extend(gone)
                    if gone or new:
                        changed.add(image_id)
                if ids:
                    s.execute(update(ImageRow), [{"id": i, "sidecar": found[p][0]} for p, i in ids.items()])
                if stale:
                    s.execute(delete(CaptionRow).where(CaptionRow.id.in_(stale)))
                s.flush()
                sync_fts(s, changed)
                removed += len(stale)
        return removed

    def captions_without_vectors(self) -> list[tuple[int, str]]:
        with self.session() as s:
            return [
                (cid, text)
                for cid, text in s.execute(select(CaptionRow.id, CaptionRow.text).where(CaptionRow.vector.is_(None)))
            ]

    @staticmethod
    def set_caption_vectors(s: Session, vectors: Iterable[tuple[int, np.ndarray]]) -> None:
        seq = next_vector_seq(s, CaptionRow)
        for cid, v in vectors:
            s.execute(update(CaptionRow).where(CaptionRow.id == cid).values(vector=pack_vector(v), vector_seq=seq))
