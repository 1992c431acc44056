"""Parse and validate query-string / form parameters shared by the API and the pages.

Bad values become a 400 with a message that names the parameter, instead of a
500 from deep inside the engine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from search.engine import Filters, SearchResult
from search.query.args import MAX_PAGE_K, ORDERS, check_date_range, check_paging, given, min_score_filter, parse_date
from search.query.kinds import MODES, Mode, Paging, TextQuery
from web.errors import HttpError

DEFAULT_K = 24


@dataclass
class SearchParams:
    k: int = DEFAULT_K
    page: int = 0
    mode: Mode = "auto"
    filters: Filters = field(default_factory=Filters)

    @property
    def paging(self) -> Paging:
        return Paging(k=self.k, page=self.page)

    def text_query(self, text: str) -> TextQuery:
        """A web client's text: every term is text, never a server path (no ``allow_files``)."""
        return TextQuery(text, mode=self.mode)

    def filter_args(self) -> dict:
        """The active filters as query-string arguments (for links that keep them)."""
        f = self.filters
        out = {
            "folder": f.folder,
            "date_from": f.date_from,
            "date_to": f.date_to,
            "min_score": "auto" if f.min_score_auto else f.min_score,
            "order": f.order if f.order != "relevance" else None,
            "mode": self.mode if self.mode != MODES[0] else None,
            "k": self.k if self.k != DEFAULT_K else None,
        }
        return {key: v for key, v in out.items() if v is not None}


def _int(args, name: str, default: int, lo: int, hi: int | None, blank_ok: bool) -> int:
    raw = given(args.get(name), name, blank_ok)
    if raw is None:
        return default
    if not (raw.isascii() and raw.lstrip("+-").isdigit()):
        raise HttpError(400, f"{name} must be an integer")
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise HttpError(400, f"{name} must be between {lo} and {hi}" if hi is not None else f"{name} must be >= {lo}")
    return value


def _date(args, name: str, blank_ok: bool) -> str | None:
    return parse_date(args.get(name), name, blank_ok)  # the CLI's --date-from/--date-to follow the same rule


def _choice(args, name: str, choices: tuple[str, ...], blank_ok: bool) -> str:
    raw = given(args.get(name), name, blank_ok) or choices[0]
    if raw not in choices:
        raise HttpError(400, f"{name} must be one of: {', '.join(choices)}")
    return raw


def _folder(args, blank_ok: bool) -> str | None:
    """An absolute, normalised server path, or None.

    The engine resolves ``~`` and relative folders for the CLI user; over HTTP that would let a client
    name other users' homes or climb out of the server's directory, so such values are refused here.
    """
    raw = given(args.get("folder"), "folder", blank_ok)
    if raw is None:
        return None
    path = raw.rstrip("/") or "/"  # "/photos/" means "/photos"
    if "\x00" in raw or "//" in raw or not os.path.isabs(path) or os.path.normpath(path) != path:
        raise HttpError(
            400, "folder must be an absolute, normalised path such as /photos/2024 (no '..', '.', '~', '//' or NUL)"
        )
    return path


def parse_search_params(args, default_k: int = DEFAULT_K, blank_ok: bool = False) -> SearchParams:
    """k, page, mode and filters from a MultiDict (request.args or request.form).

    A blank value is a 400 (``k=`` is not "the default k"); the pages pass ``blank_ok``, as their form
    sends its empty fields."""
    k = _int(args, "k", default_k, 1, MAX_PAGE_K, blank_ok)
    page = _int(args, "page", 0, 0, None, blank_ok)
    check_paging(k, page)  # the CLI's -k/--page follow the same rule
    floor = min_score_filter(given(args.get("min_score"), "min_score", blank_ok))  # the CLI's rule too
    date_from, date_to = _date(args, "date_from", blank_ok), _date(args, "date_to", blank_ok)
    check_date_range(date_from, date_to)
    folder = _folder(args, blank_ok)
    filters = Filters(
        folder=folder, date_from=date_from, date_to=date_to, **floor, order=_choice(args, "order", ORDERS, blank_ok)
    )
    mode = next(
        m for m in MODES if m == _choice(args, "mode", MODES, blank_ok)
    )  # the Mode literal, not the client's str
    return SearchParams(k=k, page=page, mode=mode, filters=filters)


def parse_moment(args, found: SearchResult) -> float | None:
    """``t``: seconds into a video, a number from 0 to its duration (plus a second's slack for the rounding
    of a time a page shows); None when absent. An image gets the same check (the caller decides)."""
    raw = given(args.get("t"), "t")
    if raw is None:
        return None
    try:
        t = float(raw)
    except ValueError:
        t = math.nan
    top = (found.duration or 0.0) + 1.0 if found.kind == "video" else math.inf
    if not 0.0 <= t <= top:  # NaN and infinities too
        limit = f"between 0 and {top:g}" if math.isfinite(top) else "a number of seconds, at least 0"
        raise HttpError(400, f"t must be {limit} (got {raw!r})")
    return t
