"""What a search answers: one result per image, and a page of them."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from search.media.files import shown

if TYPE_CHECKING:  # rows come from the engine; this module needs no SQL
    from search.store.schema import ImageRow, ResultRow


@dataclass
class SearchResult:
    id: int
    score: float | None
    path: str
    caption: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    size: int | None = None
    date: str | None = None
    folder: str | None = None
    matched_caption: str | None = None
    # Why it matched: "image" (vision ranking), "keywords" (file name, folder or caption words), "caption"
    # (caption vectors); the caption or file name that matched, and [start, end) spans of its matched words.
    matched: list[str] = field(default_factory=list)
    matched_text: str | None = None
    matched_spans: list[list[int]] | None = None
    # "image" or "video" (issue 27). A video is one result, its best moment: ``time`` (seconds of the
    # best-matching frame), ``duration`` (seconds), ``moments`` (up to 5 other matching times, each
    # {"time", "score"}, best first). None for an image.
    kind: str = "image"
    time: float | None = None
    duration: float | None = None
    moments: list[dict] | None = None
    # The text read in the image (issue 26; at most ~500 characters, None: none read) and [start, end) spans
    # of the query's words in it, highlighted like matched_text.
    text: str | None = None
    text_spans: list[list[int]] | None = None

    def to_dict(self) -> dict:
        # Every field is a scalar or a flat list: no need for asdict's recursive deep copy (~0.7 ms per page of 10).
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Page:
    """One page of results, and whether another page follows it."""

    results: list[SearchResult]
    has_more: bool
    k: int
    page: int
    floor: float | None = None  # the relevance floor (search.query.floor); None where unknown
    above_floor: int | None = None  # results ranked above the floor, counted from the first page


# What cameras write ("2023:01:05 10:00:00"): parsed without strptime (~10 µs a row), which a date filter
# pays for every row it checks. Anything else goes through strptime exactly as before.
_EXIF_TIME = re.compile(r"[0-9]{4}:[0-9]{2}:[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def shown_date(taken_at: str | None, mtime: float | None) -> str:
    """EXIF capture time when present and valid, else the file's mtime (local time), as ISO 8601."""
    if taken_at:
        t = taken_at.strip()
        try:
            if _EXIF_TIME.match(t):
                return dt.datetime(
                    int(t[0:4]), int(t[5:7]), int(t[8:10]), int(t[11:13]), int(t[14:16]), int(t[17:19])
                ).isoformat()
            return dt.datetime.strptime(t[:19], "%Y:%m:%d %H:%M:%S").isoformat()
        except ValueError:
            pass
    return dt.datetime.fromtimestamp(mtime or 0).replace(microsecond=0).isoformat()


def image_date(row: ImageRow | ResultRow) -> str:
    """The date a result shows (and the date filters compare): :func:`shown_date` of the row."""
    return shown_date(row.taken_at, row.mtime)


def to_result(row: ImageRow | ResultRow, score: float | None, caption: str | None) -> SearchResult:
    """A row as a result. A full ImageRow says whether it is a video (time: its poster's); a ResultRow (the
    covering index) does not, and the query path fills that in for a page's videos (search.query.pipeline)."""
    video = getattr(row, "kind", "image") == "video"
    return SearchResult(
        id=row.id,
        score=float(score) if score is not None else None,
        path=shown(row.path),
        caption=caption,
        width=row.width,
        height=row.height,
        format=row.format,
        size=row.size,
        date=image_date(row),
        folder=shown(os.path.dirname(row.path)),
        kind="video" if video else "image",
        time=getattr(row, "poster", None) if video else None,
        duration=getattr(row, "duration", None) if video else None,
    )
