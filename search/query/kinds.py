"""What a search asks for: the query kinds, the page wanted, and the parser for combined text queries.

Combined text queries are rclip-style: ``"2:beach + sunset - people"``. Each term
is text; an optional ``W:`` prefix weights it; ``-`` subtracts it. The combined
vector is the weighted sum of the normalised term vectors, normalised again.
Only the CLI lets a term be a path to an image file (``allow_files``): over
HTTP that would let a client probe and use files on the server.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

_SPLIT = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*:\s*(.+)$", re.S)
# Weights are relative, so nothing needs more; a bigger one overflows the float32 sum of the terms.
MAX_WEIGHT = 1e6

# The deepest any search goes (a page's end, counted from the first result): the engine never ranks more.
MAX_K = 1000

Mode = Literal["auto", "images", "captions", "keywords"]
MODES: tuple[Mode, ...] = ("auto", "images", "captions", "keywords")


@dataclass(frozen=True)
class Term:
    text: str
    weight: float
    is_image: bool


@dataclass(frozen=True)
class TextQuery:
    """Text against the images (terms may be combined), or, in ``captions`` mode, against caption vectors.

    ``images``: the vision ranking; ``keywords``: the keyword index (file names, folders, captions);
    ``auto``: both fused when the keyword index matches, else vision (search.query.hybrid). The dataclass
    default stays ``images`` (clip-retrieval's /knn-service semantics); the CLI and the API default to auto.

    Captions mode takes the text whole, as one caption-like sentence (no term parsing), and returns each
    image once with its best caption. ``allow_files`` is for the CLI only: a term naming an image file
    is that image.
    """

    text: str
    mode: Mode = "images"
    allow_files: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")


@dataclass(frozen=True)
class ImageQuery:
    """An image given as its bytes (an upload)."""

    data: bytes = field(repr=False)


@dataclass(frozen=True)
class FileQuery:
    """An image file on this machine, by path: the CLI's ``--image FILE``, never a web client's."""

    path: str


@dataclass(frozen=True)
class SimilarQuery:
    """More like this: the neighbours of an indexed image, itself excluded; of a video, the neighbours of
    its kept frame nearest ``t`` seconds (None: its poster frame), the video's own frames excluded."""

    image_id: int
    t: float | None = None


@dataclass(frozen=True, eq=False)
class VectorQuery:
    """A raw query vector (clip-retrieval's ``embedding_input``), in the index's space."""

    vector: np.ndarray = field(repr=False)


Query = TextQuery | ImageQuery | FileQuery | SimilarQuery | VectorQuery


@dataclass
class Filters:
    """Narrow results; all optional. Dates are ISO ``YYYY-MM-DD`` strings."""

    folder: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    min_score: float | None = None
    min_score_auto: bool = False  # min_score=auto: cut at the index's relevance floor (search.query.floor)
    order: str = "relevance"  # or "date": newest first within the relevant results

    def active(self) -> bool:
        return bool(self.folder or self.date_from or self.date_to or self.order == "date")


@dataclass(frozen=True)
class Paging:
    """Which page of results: ``k`` per page, ``page`` counted from 0."""

    k: int = 10
    page: int = 0


def parse_query(query: str, allow_files: bool = False) -> list[Term]:
    """Split a combined query into weighted terms (a single term is the common case).

    Pure unless ``allow_files``: only then is the filesystem asked whether a term names a file
    (an image term), and a term like ``2:x`` that names an existing path keeps its colon.
    """
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
        if m and not (allow_files and os.path.exists(raw)):
            weight, raw = float(m.group(1)), m.group(2).strip()
            if not (math.isfinite(weight) and abs(weight) <= MAX_WEIGHT):
                raise ValueError(f"a term weight must be between -{MAX_WEIGHT:,.0f} and {MAX_WEIGHT:,.0f}")
        is_image = allow_files and os.path.isfile(os.path.expanduser(raw))
        terms.append(Term(raw, sign * weight, is_image))
    if not terms:
        raise ValueError("empty query")
    return terms
