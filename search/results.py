"""What a search answers: one result per image, and a page of them."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from search.files import shown

if TYPE_CHECKING:  # rows come from the engine; this module needs no SQL
    from search.schema import ImageRow


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

    def to_dict(self) -> dict:
        # Every field is a scalar: no need for asdict's recursive deep copy (~0.7 ms per page of 10).
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Page:
    """One page of results, and whether another page follows it."""

    results: list[SearchResult]
    has_more: bool
    k: int
    page: int
    floor: float | None = None  # the relevance floor (search.floor); None where unknown
    above_floor: int | None = None  # results ranked above the floor, counted from the first page


def image_date(row: ImageRow) -> str:
    """EXIF capture time when present, else the file's mtime, as ISO 8601."""
    if row.taken_at:
        t = row.taken_at.strip()
        try:
            return dt.datetime.strptime(t[:19], "%Y:%m:%d %H:%M:%S").isoformat()
        except ValueError:
            pass
    return dt.datetime.fromtimestamp(row.mtime or 0).replace(microsecond=0).isoformat()


def to_result(row: ImageRow, score: float | None, caption: str | None) -> SearchResult:
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
    )
