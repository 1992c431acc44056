"""The database schema as SQLAlchemy 2.x mapped classes, and how vectors are stored in it.

Alembic owns the schema (``migrations/``; ``tests/test_migrations.py`` fails when these classes and the
migrations drift apart). Every statement over these tables lives in :mod:`search.store.database`.
Vectors live beside their rows as float16 blobs so an index rebuild never re-embeds an image.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, overload

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
    event,
    false,
    text,
)
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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


@overload
def fs_str(value: str | bytes) -> str: ...
@overload
def fs_str(value: None) -> None: ...
def fs_str(value: str | bytes | None) -> str | None:
    """A path column's value as the str ``os`` functions take (BLOBs are non-UTF-8 names)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


class Root(Base):
    """A folder the user asked us to index; reindex walks all of them."""

    __tablename__ = "roots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    # Symlinked files, folders and sidecars whose target lies outside every indexed folder are skipped
    # unless the user opted in for this root (`glimpse index --follow-external-links`).
    follow_external_links: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Symlinked folders leading outside are followed (files and sidecars are not): kept by migration 0010 for
    # roots that held images reached that way when every folder link was followed, so they keep working;
    # either --[no-]follow-external-links replaces it.
    follow_external_folder_links: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    added_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


# The columns a search result shows (search.query.results.to_result), and the status hydration checks.
RESULT_COLUMNS = ("id", "status", "path", "size", "mtime", "width", "height", "format", "taken_at")


class ResultRow(NamedTuple):
    """An image row's RESULT_COLUMNS (``Store.result_rows``)."""

    id: int
    status: str
    path: str
    size: int
    mtime: float
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_content_hash", "content_hash"),
        Index("ix_images_root_id", "root_id"),
        # counts by status must not read every row's vector blob (1 GB at 1M images)
        Index("ix_images_status", "status"),
        # search filters read index ranges only (search.store.filters): the rows of a folder, of a date range
        Index("ix_images_status_path", "status", "path"),
        Index("ix_images_status_taken_at", "status", "taken_at", "mtime"),
        Index("ix_images_status_mtime", "status", "mtime", "taken_at"),
        # publish reads the ids with a vector, and those written since its last version, from here alone
        Index("ix_images_vector_seq", "vector_seq"),
        # what a search result shows, for Store.result_rows: every row holds its vector (16 GB of table at 10M
        # images, more than the page cache keeps beside the index), this index ~1 GB
        Index("ix_images_result", *RESULT_COLUMNS),
        # the indexed rows still without a pixel print (empty once the backfill is done): a no-op reindex
        # finds none without reading the vector-laden table
        Index(
            "ix_images_no_print",
            "id",
            sqlite_where=text("status = 'indexed' AND pixel_print IS NULL AND kind = 'image'"),
        ),
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
    # Deferred: result rows, counts and plans never load the blob (2 KB each; 1 GB at 1M images).
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    # Which write stored ``vector`` (a counter per table; NULL exactly when ``vector`` is): an incremental
    # publish re-adds the rows written since its version, which catches a re-embed that kept the id.
    vector_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The near-duplicate finder's check (search.media.pixel_print, ~1.2 KB), made from the decode that made the
    # vector; NULL until then (rows from before migration 0008: the next index run fills it in).
    pixel_print: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    indexed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # The stat of the sidecar caption file its sidecar captions were read from (indexer.scan.sidecar_stat;
    # NULL: none, or not read since migration 0009): a sidecar that appears, changes or goes is read again.
    sidecar: Mapped[str | None] = mapped_column(String, nullable=True)
    # "image", or "video" (issue 27): a video row has no vector or pixel print of its own; its frames'
    # vectors are rows of ``frames``. For a video, width/height are the upright (display) size, ``format``
    # the container ("mp4"), ``taken_at`` the container's creation time, ``duration`` its length in
    # seconds, ``codec`` the video codec, ``poster`` the time of the frame a thumbnail without a time shows.
    # ``status`` "skipped": a file with no video stream (audio only), recorded and not read again until it changes.
    kind: Mapped[str] = mapped_column(String(8), default="image", server_default=text("'image'"))
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    codec: Mapped[str | None] = mapped_column(String(32), nullable=True)
    poster: Mapped[float | None] = mapped_column(Float, nullable=True)
    captions: Mapped[list[CaptionRow]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )


class CaptionRow(Base):
    __tablename__ = "captions"
    __table_args__ = (
        UniqueConstraint("image_id", "text", name="uq_captions_image_text"),
        Index("ix_captions_vector_seq", "vector_seq"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="manifest")
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    vector_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)  # as ImageRow.vector_seq
    image: Mapped[ImageRow] = relationship(back_populates="captions")


class FrameRow(Base):
    """One kept frame of a video (issue 27): its time and vector. Frame ids come from the images' own id
    space (``search.store.writes.allocate_ids``), so frame vectors share the live ``images`` FAISS index with
    images, and every index type, filter bitmap and paging rule applies unchanged; a hit on a frame id is
    mapped to its video at hydration. The frames of a video are replaced in one transaction with its row."""

    __tablename__ = "frames"
    __table_args__ = (Index("ix_frames_video_time", "video_id", "time"), Index("ix_frames_vector_seq", "vector_seq"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    video_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    time: Mapped[float] = mapped_column(Float)  # seconds from the start of the video, as <video> counts
    vector: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    vector_seq: Mapped[int] = mapped_column(Integer)  # the images' counter (writes.next_vector_seq)


class ModelRow(Base):
    """The model that made the stored vectors (one row: the active model)."""

    __tablename__ = "embedding_model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    pretrained: Mapped[str | None] = mapped_column(String, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String)
    dim: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


# The counts an index run adds up as it commits (``indexer.options.Counts``), each a ``JobRow`` column.
JOB_COUNTS = (
    "scanned",
    "new",
    "changed",
    "moved",
    "deleted",
    "failed",
    "unchanged",
    "embedded",
    "captions",
    "videos",
    "frames",
    "videos_failed",
    "videos_skipped",
)


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
    # The OCR stage (indexer/ocr.py): images read, of which not read (failed or timed out), seconds spent.
    ocr_read: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    ocr_failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    ocr_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Videos (indexer/video_stage.py): indexed, frames kept, failed (a failed row), skipped (no video
    # stream, or not read this run: no PyAV or GLIMPSE_VIDEO off).
    videos: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    frames: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    videos_failed: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    videos_skipped: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class OcrImageRow(Base):
    """The text read in one indexed image (``indexer/ocr.py``); no row: not read yet.

    ``engine`` names the reader and its version (an upgrade reads again); ``content_hash`` the bytes
    read (a changed file is read again). ``text``: the lines at or above the confidence cut, one a
    line: what the keyword index ``ocr_fts`` holds. ``lines``: JSON ``[[text, confidence, [x0, y0, ..
    x3, y3]], ...]``, every line the reader kept, its box's corners normalised to the upright image
    (0..1). ``error``: why it could not be read (a failure or a timeout; read again with ``--reocr``).
    """

    __tablename__ = "ocr_images"
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    engine: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    read_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    lines: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


# The image-text keyword index (search.store.ocr): FTS5 over ocr_images.text (external content, kept in
# step by triggers; migration 0011). unicode61 without stemming: codes stay whole, and a prefix query
# ("kx447"*) finds "KX4471B" (BENCHMARKS.md compares it with the trigram tokenizer).
OCR_FTS_TABLE = "ocr_fts"
OCR_FTS_TOKENIZER = "unicode61 remove_diacritics 2"


# The keyword index (search.store.fts): an FTS5 virtual table, created by migration 0004 and kept out of
# this metadata (SQLAlchemy cannot describe virtual tables). FTS5 adds shadow tables named after it;
# migrations/env.py keeps exactly these out of the drift check.
FTS_TABLE = "images_fts"
FTS_SHADOW_SUFFIXES = ("_data", "_idx", "_content", "_docsize", "_config")


def is_fts_table(name: str) -> bool:
    return any(name == t or name in {t + s for s in FTS_SHADOW_SUFFIXES} for t in (FTS_TABLE, OCR_FTS_TABLE))


# ---------------------------------------------------------------- vectors


def pack_vector(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=np.float16).tobytes()


def unpack_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return unit_f32(np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim))


def unit_f32(vectors: np.ndarray) -> np.ndarray:
    """Stored float16 vectors as float32 of norm 1 (float16 storage perturbs the norm slightly;
    keep inner product == cosine)."""
    out = np.asarray(vectors, dtype=np.float32).copy() if vectors.dtype == np.float32 else vectors.astype(np.float32)
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


# ---------------------------------------------------------------- connection


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
