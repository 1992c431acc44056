"""The SQL behind search filters: which indexed images lie under a folder and within a date range.

Part of the store (:class:`search.store.database.Store` mixes :class:`FilterRows` in). Every clause is an index
range (migration 0004: ``(status, path)``, ``(status, taken_at, mtime)``, ``(status, mtime, taken_at)``),
so the cost follows the number of matching rows, not the collection.

The folder rule is the one results always had: the path is the folder itself or lies below
``folder + "/"``. A prefix is a range (``'/a/b/' <= path < '/a/b0'``, ``'0'`` being the character after
``'/'``): no LIKE, so ``%`` and ``_`` in names need no escaping and ``/a/bc`` is not under ``/a/b``.
Paths that are not UTF-8 are stored as BLOBs (``search.store.schema.FsPath``), which sort apart from TEXT, so
the range is asked once as text and once as bytes.

The date a filter compares is the date a result shows (``search.query.results.shown_date``: a valid EXIF time,
else the mtime's local day). SQL cannot parse EXIF times the way Python does, so it selects a superset
(canonical EXIF times in the range, EXIF times of another shape in the years of the range or starting
with whitespace, and mtimes within the range widened by two days for time zones) and Python keeps the
rows whose shown day is in the range.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import text

from search.query.results import shown_date
from search.vectors.id_arrays import unique_sorted

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

_CANONICAL = "[0-9][0-9][0-9][0-9]:[0-9][0-9]:[0-9][0-9] *"
_MARGIN = 2 * 86_400  # seconds: a local day lies within a UTC day +- 14 h; two days is plenty


def under(path: str, folder: str) -> bool:
    """The folder rule: ``path`` is ``folder`` or lies below it (``folder`` absolute, as the engine resolves it)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def in_dates(day: str, date_from: str | None, date_to: str | None) -> bool:
    """Whether a result's ``YYYY-MM-DD`` day passes the date filters (plain string comparison, as always)."""
    return not ((date_from and day < date_from) or (date_to and day > date_to))


def _folder_sql(folder: str) -> tuple[str, dict]:
    """``(path range as text OR as bytes OR the folder itself)`` with its parameters."""
    prefix = folder.rstrip(os.sep) + os.sep
    upper = prefix[:-1] + chr(ord(os.sep) + 1)
    params: dict = {"f_lo_b": os.fsencode(prefix), "f_hi_b": os.fsencode(upper), "f_eq_b": os.fsencode(folder)}
    parts = ["(path >= :f_lo_b AND path < :f_hi_b)", "path = :f_eq_b"]
    try:  # a UTF-8 name is stored as TEXT; a folder that is not UTF-8 only has BLOB paths below it
        prefix.encode("utf-8"), folder.encode("utf-8")
        params.update(f_lo=prefix, f_hi=upper, f_eq=folder)
        parts += ["(path >= :f_lo AND path < :f_hi)", "path = :f_eq"]
    except UnicodeEncodeError:
        pass
    return "(" + " OR ".join(parts) + ")", params


def _date(text_: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text_) if text_ else None
    except ValueError:
        return None  # not narrowed in SQL; the exact comparison below still applies


def _exif_day(day: dt.date) -> str:
    """``YYYY:MM:DD`` as EXIF writes it; strftime's %Y drops the leading zeros of years before 1000."""
    return f"{day.year:04d}:{day.month:02d}:{day.day:02d}"


def _midnight(day: dt.date, days_after: int = 0) -> float:
    """The local midnight ``days_after`` days after ``day`` as a timestamp; -inf / +inf past what the
    platform's clock can express (0001-01-01 and 9999-12-31 are valid dates whose neighbours are not)."""
    try:
        return dt.datetime.combine(day + dt.timedelta(days=days_after), dt.time()).timestamp()
    except (OverflowError, ValueError, OSError):
        return -math.inf if day.year < 1970 else math.inf


def _date_clauses(date_from: str | None, date_to: str | None) -> list[tuple[str, dict]]:
    """Index ranges whose union holds every row whose shown day may lie in the range."""
    start, end = _date(date_from), _date(date_to)
    if (date_from and start is None) or (date_to and end is None):
        return [("1", {})]
    lo = _exif_day(start) if start else ""
    canonical = "taken_at >= :t_lo" + (" AND taken_at < :t_hi" if end else "")
    other_years = "taken_at >= :y_lo" + (" AND taken_at < :y_hi" if end else "") + " AND taken_at NOT GLOB :canon"
    params: dict[str, Any] = {"t_lo": lo, "y_lo": f"{start.year:04d}" if start else "", "canon": _CANONICAL}
    mtime = "mtime >= :m_lo" + (" AND mtime < :m_hi" if end else "")
    m_lo = _midnight(start) - _MARGIN if start else -math.inf
    if end:
        params["t_hi"] = _exif_day(end) + "\x7f"
        # the year after 9999 is "10000", which sorts before "9999": no year is after the last one
        params["y_hi"] = f"{end.year + 1:04d}" if end.year < dt.MAXYEAR else "\x7f"
        params["m_hi"] = _midnight(end, 1) + _MARGIN
    return [
        (canonical, params),
        (other_years, params),
        ("taken_at < '0'", {}),  # leading whitespace, which shown_date strips
        # the mtime decides for rows without a valid EXIF time (NULL, "0000:00:00 …", other formats)
        (mtime, {**params, "m_lo": m_lo}),
    ]


def _sure_mtimes(date_from: str | None, date_to: str | None) -> tuple[str, dict]:
    """An mtime band whose rows without an EXIF time surely show a day in the range (an hour inside the
    local midnights that bound it, for clock changes), as SQL and parameters; ``""`` when there is none."""
    start, end = _date(date_from), _date(date_to)
    if (date_from and start is None) or (date_to and end is None):
        return "", {}
    parts, params = [], {}
    if start:
        parts.append("mtime >= :s_lo")
        params["s_lo"] = _midnight(start) + 3600
    if end:
        parts.append("mtime < :s_hi")
        params["s_hi"] = _midnight(end, 1) - 3600
    if start and end and params["s_lo"] >= params["s_hi"]:
        return "", {}
    return "(" + " AND ".join(parts or ["mtime IS NOT NULL"]) + ")", params


class FilterRows:
    """Ids of the indexed images a filter keeps, and the frame ids of the videos it keeps (issue 27)."""

    engine: SAEngine  # set by Store

    def filtered_ids(self, folder: str | None, date_from: str | None, date_to: str | None) -> np.ndarray | None:
        """Sorted ids of indexed images under ``folder`` (absolute) and within the dates, with the frame ids
        of the videos kept (frames share the images' index; each frame passes or fails with its video);
        None: no such filter."""
        if not (folder or date_from or date_to):
            return None
        where, params = "status = 'indexed'", dict[str, Any]()
        if folder:
            clause, params = _folder_sql(folder)
            where += " AND " + clause
        with self.engine.connect() as conn:
            return unique_sorted(
                np.concatenate(
                    [_kept(conn, source, where, params, date_from, date_to) for source in (_IMAGES, _FRAMES)]
                )
            )


# Where a filter's ids come from: the rows of ``images`` themselves, or the frames of the video rows (the same
# WHERE over the video's columns; frames has no column of the same name but ``id``, so ids are qualified).
_IMAGES = ("images", "images.id")
_FRAMES = ("frames JOIN images ON images.id = frames.video_id", "frames.id")


def _kept(
    conn: Any, source: tuple[str, str], where: str, params: dict, date_from: str | None, date_to: str | None
) -> np.ndarray:
    """The ids ``source`` gives for the rows that pass ``where`` and the dates (not sorted, maybe repeated)."""
    table, id_col = source
    if not (date_from or date_to):
        return _ids(conn, where, params, table, id_col)
    keep: set[int] = set()
    sure, sure_params = _sure_mtimes(date_from, date_to)
    for clause, more in _date_clauses(date_from, date_to):
        if sure and "mtime" in clause:  # the rows the band below decides are not checked one by one
            clause += f" AND NOT (taken_at IS NULL AND {sure})"
        q = text(f"SELECT {id_col}, taken_at, mtime FROM {table} WHERE {where} AND {clause}")
        for image_id, taken_at, mtime in conn.execute(q, {**params, **more, **sure_params}):
            if image_id not in keep and in_dates(shown_date(taken_at, mtime)[:10], date_from, date_to):
                keep.add(image_id)
    checked = np.fromiter(keep, np.int64, len(keep))
    if not sure:
        return checked
    # ids only, no Python check each: at 10M rows that took minutes
    banded = _ids(conn, f"{where} AND taken_at IS NULL AND {sure}", {**params, **sure_params}, table, id_col)
    return np.concatenate([checked, banded])


def _ids(conn: Any, where: str, params: dict, table: str = "images", id_col: str = "id") -> np.ndarray:
    """``SELECT id FROM table WHERE where`` as an int64 array, the list built by SQLite.

    One text of comma-separated ids (``group_concat``) parsed by numpy in C, rather than a Python int
    per row: at 10M rows the cursor's tuples took 11 s."""
    joined = conn.execute(text(f"SELECT group_concat({id_col}) FROM {table} WHERE {where}"), params).scalar()
    if not joined:
        return np.zeros(0, np.int64)
    return np.fromstring(joined, dtype=np.int64, sep=",")
