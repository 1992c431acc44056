"""Statements over a list of keys, one chunk of keys per statement.

An ``IN (...)`` list binds one parameter per key; SQLite builds before 3.32 allow 999 in all, so every
read or write by a list of ids, hashes or paths goes through :func:`in_chunks` (one place for the limit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

IN_CHUNK = 500

T = TypeVar("T")


def in_chunks(keys: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """``keys`` in consecutive slices of at most ``size`` (nothing for no keys)."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]
