"""Metadata and vectors in SQLite through SQLAlchemy 2.x.

The schema is owned by Alembic (``migrations/``); :func:`open_store` upgrades
to head on open and never calls ``create_all``. Vectors live beside their rows
as float16 blobs so an index rebuild never re-embeds an image.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    false,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class FsPath(TypeDecorator):
    """A file name exactly as the file system holds it.

    A name that is valid UTF-8 is stored as TEXT; one that is not (``b"b\\xff.jpg"`` on an old
    NAS share arrives as a str with surrogate escapes, which SQLite cannot bind) is stored as the
    BLOB of its bytes and read back with ``os.fsdecode``, so it still opens the same file.
    Equality and IN lookups bind through here too. Raw DB-API reads decode with :func:`fs_str`.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or value.isascii():
            return value
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            try:
                return os.fsencode(value)
            except UnicodeEncodeError:  # a lone surrogate no file name has (e.g. from a JSON manifest)
                return value.encode("utf-8", "surrogatepass")

    def process_result_value(self, value, dialect):
        return fs_str(value)


def fs_str(value: str | bytes | None) -> str | None:
    """A path column's value as the str ``os`` functions take (BLOBs are non-UTF-8 names)."""
    return os.fsdecode(value) if value.__class__ is bytes else value


class Root(Base):
    """A folder the user asked us to index; reindex walks all of them."""

    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    # Symlinked files and sidecars whose target lies outside every indexed folder are skipped
    # unless the user opted in for this root (`glimpse index --follow-external-links`).
    follow_external_links: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_content_hash", "content_hash"),
        Index("ix_images_root_id", "root_id"),
        # counts by status must not read every row's vector blob (1 GB at 1M images)
        Index("ix_images_status", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_id: Mapped[int | None] = mapped_column(ForeignKey("roots.id"), nullable=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    # The file's canonical location when the walk reached it through a symlink (NULL: ``path`` itself).
    # A file is served only from there, and only while it is the regular file that was indexed.
    real_path: Mapped[str | None] = mapped_column(FsPath, nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    taken_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # "indexed" (has a vector), "failed" (error says why), "pending" (vector dropped by a model change)
    status: Mapped[str] = mapped_column(String(16), default="indexed")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    captions: Mapped[list[CaptionRow]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )


class CaptionRow(Base):
    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "text", name="uq_captions_image_text"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="manifest")
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    image: Mapped[ImageRow] = relationship(back_populates="captions")


class ModelRow(Base):
    """The model that made the stored vectors (one row: the active model)."""

    __tablename__ = "embedding_model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    pretrained: Mapped[str | None] = mapped_column(String, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String)
    dim: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class JobRow(Base):
    """One index/reindex run, for `glimpse stats` and /api/stats."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    scanned: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    moved: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    embedded: Mapped[int] = mapped_column(Integer, default=0)
    captions: Mapped[int] = mapped_column(Integer, default=0)
    index_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the run skipped without failing (bad caption-manifest rows, …): one line each.
    warnings: Mapped[str | None] = mapped_column(Text, nullable=True)


# ---------------------------------------------------------------- vectors


def pack_vector(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=np.float16).tobytes()


def unpack_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    arr = np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim)
    out = arr.astype(np.float32)
    # float16 storage perturbs the norm slightly; keep inner product == cosine.
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


# ---------------------------------------------------------------- ids

# SQLite integers are signed 64-bit and row ids start at 1. An id outside that range names no row, and
# binding it raises OverflowError; ids come from URLs and JSON bodies, so every lookup drops them here.
MAX_ROW_ID = 2**63 - 1


def row_ids(ids: Iterable[int]) -> list[int]:
    """The ids that can name a row; the others are simply not found."""
    return [i for i in map(int, ids) if 1 <= i <= MAX_ROW_ID]


def row_id(image_id: int) -> int | None:
    found = row_ids([image_id])
    return found[0] if found else None


# ---------------------------------------------------------------- engine


def make_engine(db_path: Path | str) -> SAEngine:
    engine = create_engine(f"sqlite:///{db_path}", future=True)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


# ---------------------------------------------------------------- indexer writes
#
# What the indexer reads and writes, named for what it does. Methods taking ``s`` run in the
# caller's transaction (``Store.transaction()``), which also commits the job's counts.

# What the diff needs of one stored image row: (id, size, mtime, content hash,
# done = has a vector or failed for good, root id, canonical location, failed).
# A plain tuple: the nightly no-op run builds one per file, and 100k dataclasses
# cost more than the scan.
RowState = tuple[int, int, float, "str | None", int, "int | None", "str | None", int]
ID, SIZE, MTIME, HASH, DONE, ROOT, REAL, FAILED = range(8)

# What ``Store.transaction()`` yields: pass it back to the methods that take ``s``.
Transaction = Session


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
            cur = conn.connection.dbapi_connection.cursor()
            try:
                cur.execute(
                    "SELECT path, id, size, mtime, content_hash, vector IS NOT NULL OR status = 'failed', "
                    "root_id, real_path, status = 'failed' FROM images"
                )
                # A BLOB path is a file name that is not UTF-8 (search.store.FsPath).
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
        src = s.get(ImageRow, src_id)
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
            )
        )

    @staticmethod
    def write_images(s: Session, new_rows: Sequence[dict], updates: Iterable[tuple[int, dict]] = ()) -> None:
        """Insert ``new_rows`` (one executemany: ORM objects cost more than the encoder on a GPU)
        and set ``(row id, column values)`` on existing rows."""
        for row_id, values in updates:
            s.execute(update(ImageRow).where(ImageRow.id == row_id).values(**values))
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
            have = (
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
        for cid, v in vectors:
            s.execute(update(CaptionRow).where(CaptionRow.id == cid).values(vector=pack_vector(v)))


class Store(IndexerWrites):
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
        s.execute(update(ImageRow).where(ImageRow.status == "indexed").values(vector=None, status="pending"))
        s.execute(update(CaptionRow).values(vector=None))

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
                    out.setdefault(r.content_hash, r)
        return out

    def get_images(self, ids: Sequence[int]) -> dict[int, ImageRow]:
        out: dict[int, ImageRow] = {}
        ids = row_ids(ids)
        with self.session() as s:
            for i in range(0, len(ids), 500):
                for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(ids[i : i + 500]))):
                    out[r.id] = r
        return out

    def get_image(self, image_id: int) -> ImageRow | None:
        image_id = row_id(image_id)
        if image_id is None:
            return None
        with self.session() as s:
            return s.get(ImageRow, image_id)

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
        image_id = row_id(image_id)
        if image_id is None:
            return []
        with self.session() as s:
            return list(
                s.scalars(select(CaptionRow.text).where(CaptionRow.image_id == image_id).order_by(CaptionRow.id))
            )

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

    def image_vectors(self, dim: int, batch: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
        return self._vectors(ImageRow, dim, batch, ImageRow.status == "indexed")

    def caption_vectors(self, dim: int, batch: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
        return self._vectors(CaptionRow, dim, batch, None)

    def _vectors(self, model, dim: int, batch: int, cond) -> tuple[np.ndarray, np.ndarray]:
        q = select(model.id, model.vector).where(model.vector.is_not(None)).order_by(model.id)
        if cond is not None:
            q = q.where(cond)
        ids: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        with self.session() as s:
            for part in s.execute(q.execution_options(yield_per=batch)).partitions(batch):
                ids.append(np.fromiter((r[0] for r in part), dtype=np.int64, count=len(part)))
                vecs.append(unpack_vectors([r[1] for r in part], dim))
        if not ids:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        return np.concatenate(vecs), np.concatenate(ids)

    def vector_of(self, image_id: int, dim: int) -> np.ndarray | None:
        image_id = row_id(image_id)
        if image_id is None:
            return None
        with self.session() as s:
            blob = s.scalar(select(ImageRow.vector).where(ImageRow.id == image_id))
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
            job = s.get(JobRow, job_id)
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
