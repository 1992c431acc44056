"""The rules for the values a person gives a search, shared by the API (web/params.py) and the CLI
(glimpse/search_command.py), so both accept and refuse the same things with the same message.

Limits: at most ``MAX_PAGE_K`` results per page (one answer stays small for a shared server and a
terminal alike; deeper lists are paged), and no page past the engine's ``MAX_K`` results (the deepest
the engine searches). Only the clip-retrieval endpoints (web/clip_compat.py) keep their own ``num_images``.
"""

from __future__ import annotations

import datetime as dt
import math

from search.errors import EXIT_USAGE, InvalidValue
from search.query.kinds import MAX_K

MAX_PAGE_K = 200
ORDERS = ("relevance", "date")
# A query is a few words, or a few terms combined ("2:beach + sunset - people"); each term is one text-encoder
# call, so an unbounded query would be unbounded work. Far above any real one.
MAX_QUERY_CHARS = 1000


class BadSearchValue(InvalidValue):
    """A search option or parameter out of its rules: a 400 over HTTP, a usage error (exit 2) on the CLI."""

    exit_code = EXIT_USAGE
    http_status = 400


def check_query_text(text: str, name: str = "q") -> None:
    """Refuse a query text longer than ``MAX_QUERY_CHARS``."""
    if len(text) > MAX_QUERY_CHARS:
        raise BadSearchValue(f"{name} is too long: at most {MAX_QUERY_CHARS} characters")


def check_paging(k: int, page: int, max_k: int = MAX_PAGE_K) -> None:
    """The paging rule, for a client (``max_k``: at most MAX_PAGE_K per page) and for the engine itself
    (``max_k=MAX_K``: a library caller or the clip-retrieval routes may ask for one deep page)."""
    if not 1 <= k <= max_k:
        raise BadSearchValue(f"k must be between 1 and {max_k}")
    if page < 0:
        raise BadSearchValue("page must be >= 0")
    if (page + 1) * k > MAX_K:
        raise BadSearchValue(f"page too deep: at most {MAX_K} results can be paged through")


def min_score_filter(raw: str | None, name: str = "min_score") -> dict:
    """A minimum score as Filters fields: ``auto`` (the index's relevance floor), a cosine similarity between
    -1 and 1, or nothing (absent or blank: no cut). ``name`` is how the caller spells it in the message."""
    text = (raw or "").strip().lower()
    if text == "auto":
        return {"min_score": None, "min_score_auto": True}
    if not text:
        return {"min_score": None, "min_score_auto": False}
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:  # NaN and infinities too
        raise BadSearchValue(f"{name} must be a number or auto: a cosine similarity between -1 and 1 (got {raw!r})")
    return {"min_score": value, "min_score_auto": False}


def given(raw: str | None, name: str, blank_ok: bool = False) -> str | None:
    """A value as given, stripped; None when absent. A blank one is refused: ``k=`` or ``--date-to ""`` is a
    mistake (a truncated link, an empty variable), not a request for the default. Only an HTML form, which
    sends every field it has, passes ``blank_ok`` (a field left empty means no filter)."""
    if raw is None:
        return None
    raw = str(raw).strip()
    if raw:
        return raw
    if blank_ok:
        return None
    raise BadSearchValue(f"{name} is empty: give a value or leave it out")


def parse_date(raw: str | None, name: str = "date", blank_ok: bool = False) -> str | None:
    """``YYYY-MM-DD`` (absent: None); ``name`` is how the caller spells the option in the message.

    Every date from 0001-01-01 to 9999-12-31 is valid (the filter code copes with days the clock cannot
    reach: search.store.filters)."""
    raw = given(raw, name, blank_ok)
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise BadSearchValue(f"{name} must be a date like 2024-05-31") from None


def check_date_range(date_from: str | None, date_to: str | None, names: tuple[str, str] = ("date_from", "date_to")):
    if date_from and date_to and date_from > date_to:
        raise BadSearchValue(f"{names[0]} is after {names[1]}")
