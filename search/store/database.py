"""Every SQL statement over the metadata database, through SQLAlchemy 2.x on SQLite.

The schema (mapped classes, vector blobs) is :mod:`search.store.schema`; Alembic owns it (``migrations/``) and
:class:`Store` upgrades to head on open and never calls ``create_all``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
from sqlalchemy import and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from search.store.chunks import in_chunks
from search.store.filters import FilterRows
from search.store.frames import FrameReads
from search.store.fts import KeywordReads
from search.store.ocr import OcrText
from search.store.schema import (
    RESULT_COLUMNS,
    CaptionRow,
    FrameRow,
    ImageRow,
    JobRow,
    ModelRow,
    ResultRow,
    Root,
    make_engine,
    row_id,
    row_ids,
    unit_f32,
    unpack_vectors,
    utcnow,
)
from search.store.vectors import PixelPrints, Table, VectorChunks, VectorReads
from search.store.writes import (  # noqa: F401  (the row-state fields, re-exported for the indexer)
    DONE,
    FAILED,
    HASH,
    ID,
    MTIME,
    REAL,
    ROOT,
    SIDECAR,
    SIZE,
    IndexerWrites,
    RowState,
    Transaction,
)


class Store(IndexerWrites, KeywordReads, FilterRows, FrameReads, VectorReads, VectorChunks, PixelPrints, OcrText):
    """Queries over the metadata database. One instance per process."""

    def __init__(self, db_path: Path | str, upgrade: bool = True):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        if upgrade:
            from search.store.migrate import upgrade_to_head

            upgrade_to_head(self.db_path)
        self.engine = make_engine(self.db_path)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.Session()

    def close(self) -> None:
        self.engine.dispose()

    # -------------------------------------------------------------- model
    def get_model(self) -> ModelRow | None:
        with self.session() as s:
            return s.scalars(select(ModelRow).order_by(ModelRow.id.desc())).first()

    def set_model(self, name: str, pretrained: str | None, fingerprint: str, dim: int) -> None:
        with self.session() as s, s.begin():
            for row in s.scalars(select(ModelRow)):
                s.delete(row)
            s.add(ModelRow(name=name, pretrained=pretrained, fingerprint=fingerprint, dim=dim))

    @staticmethod
    def _drop_all_vectors(s: Session) -> None:
        """Forget every vector (model change): rows stay, everything re-embeds."""
        s.execute(
            update(ImageRow).where(ImageRow.status == "indexed").values(vector=None, vector_seq=None, status="pending")
        )
        s.execute(update(CaptionRow).values(vector=None, vector_seq=None))
        s.execute(delete(FrameRow))  # a video's vectors are its frames': they go (its row is pending above)

    def switch_model(self, name: str, pretrained: str | None, fingerprint: str, dim: int) -> None:
        """Another model makes the vectors from now on: forget every vector and record the model,
        in one transaction (a crash leaves either the old model with its vectors or the new one)."""
        with self.session() as s, s.begin():
            self._drop_all_vectors(s)
            for row in s.scalars(select(ModelRow)):
                s.delete(row)
            s.add(ModelRow(name=name, pretrained=pretrained, fingerprint=fingerprint, dim=dim))

    # -------------------------------------------------------------- roots
    def ensure_root(self, path: str, follow_external_links: bool | None = None) -> int:
        """The root's id (added when new); ``follow_external_links`` None keeps what was recorded (either
        value replaces the folder-links-only choice an older home recorded)."""
        with self.session() as s, s.begin():
            row = s.scalars(select(Root).where(Root.path == path)).first()
            if row is None:
                row = Root(path=path, follow_external_links=bool(follow_external_links))
                s.add(row)
                s.flush()
            elif follow_external_links is not None:
                row.follow_external_links = follow_external_links
                row.follow_external_folder_links = False
            return row.id

    def roots(self) -> list[Root]:
        with self.session() as s:
            return list(s.scalars(select(Root).order_by(Root.id)))

    def set_root_available(self, root_id: int, available: bool) -> None:
        with self.session() as s, s.begin():
            row = s.get(Root, root_id)
            if row is not None:
                row.available = available
                if available:
                    row.last_seen_at = utcnow()

    # -------------------------------------------------------------- images
    def images_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """Content hash -> id of an embedded row with those bytes, or of an indexed video (a new copy reuses
        its vector, or the video's frames)."""
        hashes = list(set(hashes))
        out: dict[str, int] = {}
        with self.session() as s:
            for chunk in in_chunks(hashes):
                rows = s.execute(
                    select(ImageRow.content_hash, ImageRow.id).where(
                        ImageRow.content_hash.in_(chunk),
                        or_(ImageRow.vector.is_not(None), and_(ImageRow.kind == "video", ImageRow.status == "indexed")),
                    )
                )
                for content_hash, image_id in rows:
                    out.setdefault(cast(str, content_hash), image_id)  # not NULL: selected by it
        return out

    def get_images(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        out: dict[int, ImageRow] = {}
        found = row_ids(ids)
        with self.session() as s:
            for chunk in in_chunks(found):
                for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(chunk))):
                    out[r.id] = r
        return out

    def result_rows(self, ids: Sequence[int]) -> dict[int, ResultRow]:
        """What search results show of these rows, read from the covering index ``ix_images_result`` alone.

        SQLite's planner prefers the table's rowid, whose pages hold the vectors too: at 10M images a result's
        row was a random read from 16 GB that the page cache did not keep (hydrating a page took 5-20 ms),
        where the index is ~1 GB and stays cached."""
        cols = ", ".join(RESULT_COLUMNS)
        q = (
            text(f"SELECT {cols} FROM images INDEXED BY ix_images_result WHERE id IN :ids")
            .bindparams(bindparam("ids", expanding=True))
            .columns(*(getattr(ImageRow, c) for c in RESULT_COLUMNS))
        )
        out: dict[int, ResultRow] = {}
        found = row_ids(ids)
        with self.engine.connect() as conn:
            for chunk in in_chunks(found):
                for r in conn.execute(q, {"ids": chunk}):
                    out[r[0]] = ResultRow(*r)
        return out

    def get_image(self, image_id: int) -> ImageRow | None:
        rid = row_id(image_id)
        if rid is None:
            return None
        with self.session() as s:
            return s.get(ImageRow, rid)

    def image_id_for_path(self, path: str) -> int | None:
        with self.session() as s:
            return s.scalar(select(ImageRow.id).where(ImageRow.path == path))

    def primary_captions(self, image_ids: Sequence[int]) -> dict[int, str]:
        """First caption (lowest id) of each image."""
        ids = row_ids(image_ids)
        out: dict[int, str] = {}
        with self.session() as s:
            for chunk in in_chunks(ids):
                q = (
                    select(CaptionRow.image_id, CaptionRow.text)
                    .where(CaptionRow.image_id.in_(chunk))
                    .order_by(CaptionRow.image_id, CaptionRow.id)
                )
                for image_id, text in s.execute(q):
                    out.setdefault(image_id, text)
        return out

    def captions_of(self, image_id: int) -> list[str]:
        rid = row_id(image_id)
        if rid is None:
            return []
        with self.session() as s:
            return list(s.scalars(select(CaptionRow.text).where(CaptionRow.image_id == rid).order_by(CaptionRow.id)))

    def captions_by_ids(self, caption_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        ids = row_ids(caption_ids)
        out: dict[int, tuple[int, str]] = {}
        with self.session() as s:
            for chunk in in_chunks(ids):
                q = select(CaptionRow.id, CaptionRow.image_id, CaptionRow.text).where(CaptionRow.id.in_(chunk))
                for cid, iid, text in s.execute(q):
                    out[cid] = (iid, text)
        return out

    def image_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Every image vector as unit float32, in memory (tests and benchmarks; publish streams)."""
        return self._all_vectors("images", dim)

    def _all_vectors(self, table: Table, dim: int) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.iter_vectors(table, dim))
        if not parts:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return unit_f32(np.concatenate([v for _, v in parts])), np.concatenate([i for i, _ in parts])

    def vectors_of(self, image_ids: Iterable[int], dim: int) -> dict[int, np.ndarray]:
        """Stored vectors by id in the ``images`` index (an image's, or a video frame's), a chunk of ids a
        query; ids without a vector (a video row, an unknown id) are left out."""
        found = row_ids(list(image_ids))
        out: dict[int, np.ndarray] = {}
        with self.session() as s:
            for chunk in in_chunks(found):
                rows = s.execute(
                    select(ImageRow.id, ImageRow.vector).where(ImageRow.id.in_(chunk), ImageRow.vector.is_not(None))
                ).all()
                if rows:
                    vecs = unpack_vectors([cast(bytes, blob) for _, blob in rows], dim)  # not NULL: selected by it
                    out.update((image_id, vecs[j]) for j, (image_id, _) in enumerate(rows))
        rest = [i for i in found if i not in out]
        if rest:  # frame ids share the index (issue 27)
            out.update(self.frame_vectors(rest, dim))
        return out

    def failed_images(self, limit: int | None = None) -> list[tuple[str, str]]:
        """Failed files by path; ``limit=None`` lists them all, ``0`` none (a cheap ``stats``)."""
        q = select(ImageRow.path, ImageRow.error).where(ImageRow.status == "failed").order_by(ImageRow.path)
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return [(p, e or "") for p, e in s.execute(q)]

    def counts(self) -> dict[str, int]:
        """Rows by kind and status (``images_failed`` counts image files, ``videos_failed`` videos;
        ``videos_skipped``: no video stream), frames, captions and roots."""
        with self.session() as s:
            by = dict(
                ((kind, status), n)
                for kind, status, n in s.execute(
                    select(ImageRow.kind, ImageRow.status, func.count()).group_by(ImageRow.kind, ImageRow.status)
                )
            )
            frames = s.scalar(select(func.count()).select_from(FrameRow))
            captions = s.scalar(select(func.count()).select_from(CaptionRow))
            roots = s.scalar(select(func.count()).select_from(Root))
        return {
            "images_indexed": by.get(("image", "indexed"), 0),
            "images_failed": by.get(("image", "failed"), 0),
            "videos_indexed": by.get(("video", "indexed"), 0),
            "video_frames": frames or 0,
            "videos_failed": by.get(("video", "failed"), 0),
            "videos_skipped": by.get(("video", "skipped"), 0),
            "captions": captions or 0,
            "roots": roots or 0,
        }

    # -------------------------------------------------------------- jobs
    def start_job(self, kind: str) -> int:
        with self.session() as s, s.begin():
            job = JobRow(kind=kind)
            s.add(job)
            s.flush()
            return job.id

    def finish_job(self, job_id: int, outcome: str, **fields) -> None:
        with self.session() as s, s.begin():
            job = s.get_one(JobRow, job_id)
            job.outcome = outcome
            job.finished_at = utcnow()
            for k, v in fields.items():
                setattr(job, k, v)

    @staticmethod
    def set_job_counts(s: Session, job_id: int, **counts: int) -> None:
        """A running job's counts, written in the caller's transaction (the one committing that work)."""
        s.execute(update(JobRow).where(JobRow.id == job_id).values(**counts))

    def recent_jobs(self, limit: int = 10) -> list[JobRow]:
        with self.session() as s:
            return list(s.scalars(select(JobRow).order_by(JobRow.id.desc()).limit(limit)))

    def mark_interrupted_jobs(self) -> None:
        """Jobs still 'running' when no lock is held were killed mid-run."""
        with self.session() as s, s.begin():
            for job in s.scalars(select(JobRow).where(JobRow.outcome == "running")):
                job.outcome = "interrupted"
                job.finished_at = job.finished_at or utcnow()
