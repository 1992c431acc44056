"""Text inside images: what the OCR stage stored (``ocr_images``) and its keyword index (``ocr_fts``).

The indexer writes a batch of results per transaction (:meth:`OcrText.set_ocr_results`); triggers keep
``ocr_fts`` in step in that same transaction, and an image's delete cascades to both. The query path
reads it through :meth:`OcrText.text_ranking` (ids best first), :meth:`OcrText.page_texts` (a page's
texts, matched words marked) and :meth:`OcrText.text_of` (the lines and their boxes, for the detail
page). ``match`` is an FTS5 query built from quoted words (:func:`text_match`), never a client's text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from search.settings import OCR_LANGS, settings
from search.store.chunks import in_chunks
from search.store.fts import MARK_END, MARK_START, fts_text, shown_text
from search.store.schema import OCR_FTS_TABLE, ImageRow, JobRow, OcrImageRow, row_ids, utcnow
from search.store.words import CJK_CHAR, phrase

# A query word this long, or one holding a digit (a code, a plate), matches as a prefix too: "KX447"
# finds "KX4471B", "invoi" finds "invoice"; a shorter plain word matches whole ("cat" not "catalog").
PREFIX_MIN_CHARS = 5


# Bumped when what the indexer feeds the reader changes (sizes, cut): every image is read again next run.
PIPELINE = 1
BUNDLED_LANG = OCR_LANGS[0]  # RapidOCR's bundled multilingual recognition model (GLIMPSE_OCR_LANG)


def engine_id(lang: str | None = None) -> str | None:
    """The reader, its version and model as stored per image (another value reads every image again);
    None when RapidOCR is not installed. ``lang``: GLIMPSE_OCR_LANG's by default."""
    return _engine_id(lang or settings()["GLIMPSE_OCR_LANG"])


@functools.cache
def _engine_id(lang: str) -> str | None:
    try:
        installed = version("rapidocr")
    except PackageNotFoundError:
        return None
    model = "PP-OCRv6" if lang == BUNDLED_LANG else f"PP-OCRv5 {lang}"  # the bundled one keeps its old name
    return f"rapidocr {installed} {model} g{PIPELINE}"


@dataclass(frozen=True)
class TextLine:
    """One recognised line: its text, the reader's confidence (0..1), and its box's four corners
    ``(x0, y0, x1, y1, x2, y2, x3, y3)`` as fractions of the upright image's width and height."""

    text: str
    confidence: float
    box: tuple[float, ...]


@dataclass(frozen=True)
class ImageText:
    """What was read in one image: by which engine, and its lines (empty: no text found)."""

    engine: str
    lines: tuple[TextLine, ...]
    error: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True)
class OcrResult:
    """One image's result for :meth:`OcrText.set_ocr_results` (``error`` set: nothing could be read)."""

    image_id: int
    content_hash: str | None
    lines: Sequence[TextLine] = ()
    error: str | None = None


def _word_query(word: str) -> str:
    if CJK_CHAR.search(word):  # a phrase of its characters (and of the codes or words beside them)
        return '"' + phrase(word) + '"'
    quoted = '"' + word.replace('"', '""') + '"'
    if len(word) >= PREFIX_MIN_CHARS or any(c.isdigit() for c in word):
        return quoted + "*"
    return quoted


_WORDS = re.compile(r"[^\W_]+")  # runs of letters and digits: how unicode61 splits the stored text
MAX_WORDS = 32  # as the keyword index's queries (search.query.keywords)


def text_words(text: str) -> list[str]:
    """A query text's words as the text index holds them: ``"KX4471B, gate"`` → ``kx4471b``, ``gate``."""
    return list(dict.fromkeys(w.lower() for w in _WORDS.findall(text)))[:MAX_WORDS]


def text_match(words: Iterable[str], all_words: bool = False) -> str | None:
    """An FTS5 query for ``ocr_fts``: each word quoted (codes and long words as prefixes), OR-ed like the
    keyword index's (bm25 ranks images with more of them first), or AND-ed; None when there is none."""
    terms = [_word_query(w) for t in words for w in text_words(t)]
    return (" AND " if all_words else " OR ").join(terms) if terms else None


def lines_json(lines: Sequence[TextLine]) -> str:
    return json.dumps(
        [[ln.text, round(ln.confidence, 4), [round(v, 4) for v in ln.box]] for ln in lines],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def parse_lines(raw: str | None) -> tuple[TextLine, ...]:
    if not raw:
        return ()
    return tuple(TextLine(t, float(c), tuple(float(v) for v in b)) for t, c, b in json.loads(raw))


class OcrText:
    """The OCR reads and writes; mixed into :class:`search.store.database.Store`."""

    def session(self) -> Session:  # pragma: no cover - provided by Store
        raise NotImplementedError

    # ------------------------------------------------------------ the indexer's side
    @staticmethod
    def _pending_where(engine: str):
        o = OcrImageRow
        # A stored read is stale when another engine made it or from other bytes (``--reocr`` forgets the
        # bytes of every read: :meth:`forget_ocr_reads`). Videos are not read (their frames are not files).
        stale = (o.image_id.is_(None)) | (o.engine != engine) | (o.content_hash.is_not(ImageRow.content_hash))
        return (ImageRow.status == "indexed") & (ImageRow.kind == "image") & stale

    def ocr_pending(
        self, engine: str, limit: int, after: tuple[float, int] | None = None
    ) -> list[tuple[int, str, str | None, float, str | None]]:
        """Indexed images whose text is not read by ``engine`` from their current bytes, newest first
        (by file time): ``(id, path, real_path, mtime, content_hash)``. ``after``: the last row of the
        previous round's ``(mtime, id)``."""
        q = (
            select(ImageRow.id, ImageRow.path, ImageRow.real_path, ImageRow.mtime, ImageRow.content_hash)
            .outerjoin(OcrImageRow, OcrImageRow.image_id == ImageRow.id)
            .where(self._pending_where(engine))
            .order_by(ImageRow.mtime.desc(), ImageRow.id.desc())
            .limit(limit)
        )
        if after is not None:
            m, i = after
            q = q.where((ImageRow.mtime < m) | ((ImageRow.mtime == m) & (ImageRow.id < i)))
        with self.session() as s:
            return [(int(a), p, r, float(m), h) for a, p, r, m, h in s.execute(q)]

    def count_ocr_pending(self, engine: str) -> int:
        q = (
            select(func.count())
            .select_from(ImageRow)
            .outerjoin(OcrImageRow, OcrImageRow.image_id == ImageRow.id)
            .where(self._pending_where(engine))
        )
        with self.session() as s:
            return int(s.scalar(q) or 0)

    def forget_ocr_reads(self) -> int:
        """``--reocr``: every stored read becomes pending (which bytes it was read from is forgotten), in
        one transaction, so a run stopped midway leaves the rest pending for the next run, plain or not.
        The text stays searchable until its image is read again. Returns how many reads were marked."""
        with self.session() as s, s.begin():
            done = s.execute(update(OcrImageRow).where(OcrImageRow.content_hash.is_not(None)).values(content_hash=None))
            return int(getattr(done, "rowcount", 0) or 0)

    def set_ocr_results(
        self,
        engine: str,
        results: Sequence[OcrResult],
        min_confidence: float,
        job_id: int | None = None,
        job_counts: dict | None = None,
    ) -> None:
        """Store one batch of results in one transaction (their keyword rows follow by trigger), with
        the running job's OCR counts (``job_counts``) in the same transaction.

        Only lines at or above ``min_confidence`` reach the keyword index: a photo's stray marks read
        at low confidence must not make an absent word match."""
        if not results:
            return
        now = utcnow()
        with self.session() as s, s.begin():
            ids = row_ids(r.image_id for r in results)
            live = set(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(ids))))  # deleted meanwhile: skip
            values = [
                {
                    "image_id": r.image_id,
                    "engine": engine,
                    "content_hash": r.content_hash,
                    "read_at": now,
                    "text": "\n".join(fts_text(ln.text) for ln in r.lines if ln.confidence >= min_confidence) or None,
                    "lines": lines_json(r.lines) if r.lines else None,
                    "error": r.error,
                }
                for r in results
                if r.image_id in live
            ]
            if values:
                # Delete then insert (not an upsert): the update trigger would need the old text, which the
                # delete trigger reads from the row itself.
                s.execute(delete(OcrImageRow).where(OcrImageRow.image_id.in_([v["image_id"] for v in values])))
                s.execute(insert(OcrImageRow), values)
            if job_id is not None and job_counts:
                s.execute(update(JobRow).where(JobRow.id == job_id).values(**job_counts))

    # ------------------------------------------------------------ the query path's side
    def text_ranking(self, match: str, limit: int) -> list[tuple[int, float]]:
        """Images whose text matches, best first: ``(image id, bm25 score)``, higher is better; equal scores
        by id, so a longer list continues a shorter one exactly (many images holding the same text, the
        same app's screenshots, tie: without the order the page could not be final before the last of them).
        Only images still indexed (a failed or pending row keeps no keyword row in search)."""
        q = text(
            f"SELECT f.rowid, -bm25({OCR_FTS_TABLE}) AS score FROM {OCR_FTS_TABLE} f "
            f"JOIN images i ON i.id = f.rowid AND i.status = 'indexed' "
            f"WHERE {OCR_FTS_TABLE} MATCH :m ORDER BY rank, f.rowid LIMIT :n"
        )
        with self.session() as s:
            return [(int(i), float(score)) for i, score in s.execute(q, {"m": match, "n": int(limit)})]

    def text_scores(self, match: str, ids: Sequence[int]) -> dict[int, float]:
        """The bm25 score (higher is better) of each of ``ids`` whose text matches."""
        q = text(
            f"SELECT rowid, -bm25({OCR_FTS_TABLE}) FROM {OCR_FTS_TABLE} "
            f"WHERE {OCR_FTS_TABLE} MATCH :m AND rowid IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        found = row_ids(ids)
        out: dict[int, float] = {}
        with self.session() as s:
            for chunk in in_chunks(found):
                out.update((int(r[0]), float(r[1])) for r in s.execute(q, {"m": match, "ids": chunk}))
        return out

    def page_texts(self, ids: Sequence[int], match: str | None) -> dict[int, str]:
        """``{id: text}`` of each of ``ids`` with text in the keyword index (its lines joined by newlines),
        the words of ``match`` (None: no query words) between MARK_START and MARK_END: one read per chunk,
        matching or not (a page's results)."""
        found = row_ids(ids)
        if match is None:
            q = text("SELECT image_id, text FROM ocr_images WHERE text IS NOT NULL AND image_id IN :ids")
        else:
            q = text(
                f"SELECT o.image_id, coalesce(h.marked, o.text) FROM ocr_images o LEFT JOIN ("
                f"SELECT rowid AS id, highlight({OCR_FTS_TABLE}, 0, :a, :b) AS marked FROM {OCR_FTS_TABLE} "
                f"WHERE {OCR_FTS_TABLE} MATCH :m AND rowid IN :ids) h ON h.id = o.image_id "
                f"WHERE o.text IS NOT NULL AND o.image_id IN :ids"
            )
        q = q.bindparams(bindparam("ids", expanding=True))
        out: dict[int, str] = {}
        with self.session() as s:
            for chunk in in_chunks(found):
                rows = s.execute(q, {"m": match, "ids": chunk, "a": MARK_START, "b": MARK_END})
                out.update((int(r[0]), shown_text(r[1])) for r in rows)
        return out

    def text_of(self, ids: Sequence[int]) -> dict[int, ImageText]:
        """What was read in each of ``ids`` (those not read yet are left out)."""
        found = row_ids(ids)
        out: dict[int, ImageText] = {}
        with self.session() as s:
            for chunk in in_chunks(found):
                q = select(OcrImageRow.image_id, OcrImageRow.engine, OcrImageRow.lines, OcrImageRow.error).where(
                    OcrImageRow.image_id.in_(chunk)
                )
                for image_id, engine, lines, error in s.execute(q):
                    out[image_id] = ImageText(engine, parse_lines(lines), error)
        return out

    def ocr_counts(self, engine: str | None) -> dict[str, int]:
        """Images read for text (by any engine), with text in the keyword index, failed, and pending
        for ``engine`` (None: not counted, e.g. OCR is off)."""
        with self.session() as s:
            read, with_text, failed = s.execute(
                select(func.count(), func.count(OcrImageRow.text), func.count(OcrImageRow.error))
                .select_from(OcrImageRow)
                .join(ImageRow, ImageRow.id == OcrImageRow.image_id)
                .where((ImageRow.status == "indexed") & (ImageRow.kind == "image"))
            ).one()
        pending = self.count_ocr_pending(engine) if engine is not None else 0
        return {"read": int(read), "with_text": int(with_text), "failed": int(failed), "pending": pending}
