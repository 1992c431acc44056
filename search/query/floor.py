"""Serving the relevance floor: the score under which a text query's results are no better than what
unrelated images get (estimated at publish by indexer.floor_estimate, stored in the version's manifest).

Read only from the manifest, so the query path needs no torch for it. A version published before
floors existed has none: ``floor`` is then None and ``min_score=auto`` cuts nothing.
"""

from __future__ import annotations

import dataclasses
import math

from search.query.kinds import Filters, Query, TextQuery


def floor_for(query: Query, manifest: dict) -> float | None:
    """The live version's floor where it was estimated for: text queries against image vectors (``images``
    mode, and ``auto``, whose scores are the same cosines; there a keyword match counts as above it)."""
    if not (isinstance(query, TextQuery) and query.mode in ("images", "auto")):
        return None
    value = manifest.get("floor")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def resolve_auto(filters: Filters, floor: float | None) -> Filters:
    """``min_score=auto`` becomes the floor (no cut when there is none)."""
    if not filters.min_score_auto:
        return filters
    return dataclasses.replace(filters, min_score=floor, min_score_auto=False)
