"""Every SQL statement over the metadata database, through SQLAlchemy 2.x on SQLite.

The schema (mapped classes, vector blobs) is :mod:`search.schema`; Alembic owns it (``migrations/``) and
:class:`Store` upgrades to head on open and never calls ``create_all``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, cast

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import Session, sessionmaker

from search.schema import (
    CaptionRow,
    ImageRow,
    JobRow,
    ModelRow,
    Root,
    fs_str,
    make_engine,
    pack_vector,
    row_id,
    row_ids,
    unit_f32,
    unpack_vectors,
    utcnow,
)
from search.store_vectors import Table, VectorReads

# ---------------------------------------------------------------- indexer writes
#
# What the indexer reads and writes, named for what it does. Methods taking ``s`` run in the
# caller's transaction (``Store.transaction()``), which also commits the job's counts.

# What the diff needs of one stored image row: (id, size, mtime, content hash,
# done = has a vector or failed for good, root id, canonical location, failed).
# A plain tuple: the nightly no-op run builds one per file, and 100k dataclasses
# cost more than the scan.
RowState = tuple[int, int, float, "str | None", int, "int | None", "str | None", int]
# Final ints, so a type checker knows the type of ``state[SIZE]``.
ID: Final = 0
SIZE: Final = 1
MTIME: Final = 2
HASH: Final = 3
DONE: Final = 4
ROOT: Final = 5
REAL: Final = 6
FAILED: Final = 7

# What ``Store.transaction()`` yields: pass it back to the methods that take ``s``.
Transaction = Session


def next_vector_seq(s: Session, model: type[ImageRow] | type[CaptionRow]) -> int:
    """The ``vector_seq`` of a write that stores vectors: one past the table's highest (an index lookup)."""
    return int(s.scalar(select(func.max(model.vector_seq))) or 0) + 1


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
                    "SELECT path, id, size, mtime, content_hash, vector IS NOT NULL OR status = 'failed', "
                    "root_id, real_path, status = 'failed' FROM images"
                )
                # A BLOB path is a file name that is not UTF-8 (search.schema.FsPath).
                return {
                    fs_str(r[0]): r[1:] if r[7].__class__ is not bytes else (*r[1:7], fs_str(r[7]), r[8]) for r in cur
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

    @staticmethod
    def copy_image(
        s: Session,
        src_id: int,
        path: str,
        real_path: str | None,
        root_id: int,
        size: int,
        mtime: float,
        content_hash: str,
    ) -> None:
        """A new file with the bytes of row ``src_id``: a new row reusing its metadata and vector."""
        src = s.get_one(ImageRow, src_id)
        s.add(
            ImageRow(
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
                vector_seq=next_vector_seq(s, ImageRow) if src.vector is not None else None,
            )
        )

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
            s.execute(insert(ImageRow), list(new_rows))

    @staticmethod
    def delete_images(s: Session, ids: Sequence[int]) -> None:
        """Rows of files that are gone, with their captions."""
        ids = list(ids)
        for i in range(0, len(ids), 500):
            s.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(ids[i : i + 500])))
            s.execute(delete(ImageRow).where(ImageRow.id.in_(ids[i : i + 500])))

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
            for path, caps in wanted.items():
                image_id = ids.get(path)
                if image_id is None:
                    continue
                for text, source in caps:
                    if (image_id, text) not in have:
                        have.add((image_id, text))
                        s.add(CaptionRow(image_id=image_id, text=text, source=source))
        return missing

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


class Store(IndexerWrites, VectorReads):
    """Queries over the metadata database. One instance per process."""

    def __init__(self, db_path: Path | str, upgrade: bool = True):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        if upgrade:
            from search.migrate import upgrade_to_head

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
        """The root's id (added when new); ``follow_external_links`` None keeps what was recorded."""
        with self.session() as s, s.begin():
            row = s.scalars(select(Root).where(Root.path == path)).first()
            if row is None:
                row = Root(path=path, follow_external_links=bool(follow_external_links))
                s.add(row)
                s.flush()
            elif follow_external_links is not None:
                row.follow_external_links = follow_external_links
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
    def images_by_hash(self, hashes: Iterable[str]) -> dict[str, ImageRow]:
        hashes = list(set(hashes))
        out: dict[str, ImageRow] = {}
        with self.session() as s:
            for i in range(0, len(hashes), 500):
                rows = s.scalars(
                    select(ImageRow).where(ImageRow.content_hash.in_(hashes[i : i + 500]), ImageRow.vector.is_not(None))
                )
                for r in rows:
                    out.setdefault(cast(str, r.content_hash), r)  # not NULL: selected by it
        return out

    def get_images(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        out: dict[int, ImageRow] = {}
        found = row_ids(ids)
        with self.session() as s:
            for i in range(0, len(found), 500):
                for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(found[i : i + 500]))):
                    out[r.id] = r
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
            for i in range(0, len(ids), 500):
                q = (
                    select(CaptionRow.image_id, CaptionRow.text)
                    .where(CaptionRow.image_id.in_(ids[i : i + 500]))
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
            for i in range(0, len(ids), 500):
                q = select(CaptionRow.id, CaptionRow.image_id, CaptionRow.text).where(
                    CaptionRow.id.in_(ids[i : i + 500])
                )
                for cid, iid, text in s.execute(q):
                    out[cid] = (iid, text)
        return out

    def image_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Every image vector as unit float32, in memory (tests and benchmarks; publish streams)."""
        return self._all_vectors("images", dim)

    def caption_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        return self._all_vectors("captions", dim)

    def _all_vectors(self, table: Table, dim: int) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.iter_vectors(table, dim))
        if not parts:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return unit_f32(np.concatenate([v for _, v in parts])), np.concatenate([i for i, _ in parts])

    def vector_of(self, image_id: int, dim: int) -> np.ndarray | None:
        rid = row_id(image_id)
        if rid is None:
            return None
        with self.session() as s:
            blob = s.scalar(select(ImageRow.vector).where(ImageRow.id == rid))
        return None if blob is None else unpack_vectors([blob], dim)[0]

    def failed_images(self, limit: int | None = None) -> list[tuple[str, str]]:
        """Failed files by path; ``limit=None`` lists them all, ``0`` none (a cheap ``stats``)."""
        q = select(ImageRow.path, ImageRow.error).where(ImageRow.status == "failed").order_by(ImageRow.path)
        if limit is not None:
            q = q.limit(limit)
        with self.session() as s:
            return [(p, e or "") for p, e in s.execute(q)]

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            indexed = s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.status == "indexed"))
            failed = s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.status == "failed"))
            captions = s.scalar(select(func.count()).select_from(CaptionRow))
            roots = s.scalar(select(func.count()).select_from(Root))
        return {
            "images_indexed": indexed or 0,
            "images_failed": failed or 0,
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
