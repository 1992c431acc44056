"""The keyword index: an SQLite FTS5 table over each image's file name, folder names and captions.

``images_fts`` (created by migration 0004) has one row per indexed image, ``rowid`` = the image id:

- ``name``: the file name split into words (:func:`search.store.words.split_words`: ``IMG_2041-redCar.jpg``
  → ``img 2041 red car jpg``);
- ``folders``: the words of the folders between the image's root and the file (the root's own path
  is left out: ``/home/ann/photos`` says nothing about a picture); an image outside its root (or
  without one) has its parent folder's name;
- ``captions``: its captions, one a line.

Its rows are written from Python, in the transaction of the indexer write that changes them
(``search.store.writes`` calls :func:`sync_fts` / :func:`drop_fts`), because the name splitting is
Python. The reads (ranking, highlights) are the :class:`KeywordReads` mixin of :class:`Store`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from search.store.chunks import in_chunks
from search.store.schema import FTS_TABLE, CaptionRow, ImageRow, Root, row_ids
from search.store.words import SEP, separate_cjk, split_words

# highlight() markers: control characters that never reach the table (fts_text removes them), so a
# caption cannot fake a highlight.
MARK_START, MARK_END = "\x02", "\x03"

_DELETE = text(f"DELETE FROM {FTS_TABLE} WHERE rowid IN :ids").bindparams(bindparam("ids", expanding=True))
_INSERT = text(f"INSERT INTO {FTS_TABLE}(rowid, name, folders, captions) VALUES (:id, :name, :folders, :captions)")


def fts_text(value: str) -> str:
    """Text as stored in the index: no highlight markers, no line breaks (a line is one caption), each CJK
    character a token of its own (:func:`search.store.words.separate_cjk`)."""
    return separate_cjk(value.replace(MARK_START, " ").replace(MARK_END, " ").replace("\r", " ").replace("\n", " "))


def shown_text(indexed: str) -> str:
    """Indexed text (or its ``highlight()``) as it was written: without ``SEP``, and with the marks of a
    phrase, which its characters' own tokens split, joined again."""
    return indexed.replace(SEP, "").replace(MARK_END + MARK_START, "")


def folder_words(path: str, root: str | None) -> str:
    return _folder_words(os.path.dirname(path), root)


@functools.lru_cache(maxsize=4096)
def _folder_words(parent: str, root: str | None) -> str:
    """Cached: a batch of rows mostly shares a few folders (the indexer writes thousands of rows a second)."""
    if root and (parent + os.sep).startswith(root.rstrip(os.sep) + os.sep):
        rel = os.path.relpath(parent, root)
        folders = [] if rel == "." else rel.split(os.sep)
    else:
        folders = [os.path.basename(parent)]
    return " ".join(w for f in folders for w in split_words(f))


def fts_row(image_id: int, path: str, root: str | None, captions: Sequence[str]) -> dict:
    return {
        "id": image_id,
        "name": " ".join(split_words(os.path.basename(path))),
        "folders": folder_words(path, root),
        "captions": "\n".join(fts_text(c) for c in captions),
    }


def sync_fts(s: Session, ids: Iterable[int]) -> None:
    """Rewrite the keyword rows of these images from their rows and captions (indexed images only)."""
    ids = sorted(set(ids))
    for chunk in in_chunks(ids):
        rows = s.execute(
            select(ImageRow.id, ImageRow.path, Root.path)
            .outerjoin(Root, Root.id == ImageRow.root_id)
            .where(ImageRow.id.in_(chunk), ImageRow.status == "indexed")
        ).all()
        caps: dict[int, list[str]] = {}
        if rows:
            q = (
                select(CaptionRow.image_id, CaptionRow.text)
                .where(CaptionRow.image_id.in_([r[0] for r in rows]))
                .order_by(CaptionRow.image_id, CaptionRow.id)
            )
            for image_id, caption in s.execute(q):
                caps.setdefault(image_id, []).append(caption)
        s.execute(_DELETE, {"ids": chunk})
        if rows:
            s.execute(_INSERT, [fts_row(iid, path, root, caps.get(iid, ())) for iid, path, root in rows])


def drop_fts(s: Session, ids: Sequence[int]) -> None:
    ids = list(ids)
    for chunk in in_chunks(ids):
        s.execute(_DELETE, {"ids": chunk})


def ids_of_paths(s: Session, paths: Sequence[str]) -> list[int]:
    out: list[int] = []
    for chunk in in_chunks(paths):
        out.extend(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(chunk))))
    return out


class KeywordReads:
    """Reads of the keyword index; mixed into :class:`Store`. ``match`` is an FTS5 query that
    :mod:`search.query.keywords` built from quoted words, never a client's text."""

    def session(self) -> Session:  # pragma: no cover - provided by Store
        raise NotImplementedError

    def keyword_ranking(self, match: str, limit: int) -> list[tuple[int, float]]:
        """Best first: ``(image id, bm25 score)``, higher is better (FTS5's bm25() is negated); equal scores
        by id, so a longer list continues a shorter one exactly."""
        q = text(
            f"SELECT rowid, -bm25({FTS_TABLE}) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :m "
            "ORDER BY rank, rowid LIMIT :n"
        )
        with self.session() as s:
            return [(int(i), float(score)) for i, score in s.execute(q, {"m": match, "n": int(limit)})]

    def keyword_matches(self, match: str, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` match."""
        q = text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :m AND rowid IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        found = row_ids(ids)
        out: set[int] = set()
        with self.session() as s:
            for chunk in in_chunks(found):
                out.update(int(r[0]) for r in s.execute(q, {"m": match, "ids": chunk}))
        return out

    def keyword_scores(self, match: str, ids: Sequence[int]) -> dict[int, float]:
        """``{id: bm25 score}`` of those of ``ids`` that match (bm25 uses the whole table's statistics, so a
        row scores the same here as in :meth:`keyword_ranking`)."""
        q = text(
            f"SELECT rowid, -bm25({FTS_TABLE}) FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :m AND rowid IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        found = row_ids(ids)
        out: dict[int, float] = {}
        with self.session() as s:
            for chunk in in_chunks(found):
                out.update((int(r[0]), float(r[1])) for r in s.execute(q, {"m": match, "ids": chunk}))
        return out

    def keyword_highlights(self, match: str, ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """``{id: (name, folders, captions)}`` with matched words between MARK_START and MARK_END."""
        cols = ", ".join(f"highlight({FTS_TABLE}, {c}, :a, :b)" for c in range(3))
        q = text(f"SELECT rowid, {cols} FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :m AND rowid IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        found = row_ids(ids)
        out: dict[int, tuple[str, str, str]] = {}
        with self.session() as s:
            for chunk in in_chunks(found):
                rows = s.execute(q, {"m": match, "ids": chunk, "a": MARK_START, "b": MARK_END})
                out.update((int(r[0]), (r[1] or "", r[2] or "", shown_text(r[3] or ""))) for r in rows)
        return out
