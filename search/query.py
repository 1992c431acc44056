"""Parse rclip-style combined queries: ``"2:beach + sunset - people"``.

Each term is text, or a path to an image file; an optional ``W:`` prefix
weights it; ``-`` subtracts it. The combined vector is the weighted sum of
the normalised term vectors, normalised again.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

_SPLIT = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*:\s*(.+)$", re.S)
# Weights are relative, so nothing needs more; a bigger one overflows the float32 sum of the terms.
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class Term:
    text: str
    weight: float
    is_image: bool


def parse_query(query: str) -> list[Term]:
    """Split a combined query into weighted terms (a single term is the common case)."""
    query = query.strip()
    if not query:
        raise ValueError("empty query")
    parts = _SPLIT.split(" " + query if query[0] in "+-" else query)
    terms: list[Term] = []
    sign = 1.0
    first = parts[0].strip()
    if first.startswith(("+ ", "- ")):
        sign, first = (-1.0 if first[0] == "-" else 1.0), first[2:]
    items = [(sign, first)] + [(-1.0 if parts[i] == "-" else 1.0, parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    for sign, raw in items:
        raw = raw.strip()
        if not raw:
            continue
        weight = 1.0
        m = _WEIGHT.match(raw)
        if m and not os.path.exists(raw):
            weight, raw = float(m.group(1)), m.group(2).strip()
            if not (math.isfinite(weight) and abs(weight) <= MAX_WEIGHT):
                raise ValueError(f"a term weight must be between -{MAX_WEIGHT:,.0f} and {MAX_WEIGHT:,.0f}")
        path = os.path.expanduser(raw)
        terms.append(Term(raw, sign * weight, os.path.isfile(path)))
    if not terms:
        raise ValueError("empty query")
    return terms
