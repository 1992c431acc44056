"""A full disk during a run: recognised wherever it surfaces, told to the user in one line.

It surfaces as SQLite's SQLITE_FULL ("database or disk is full", wrapped by
SQLAlchemy) or SQLITE_IOERR_SHMSIZE (a "disk I/O error" when the WAL index file
cannot be created on a full disk), as OSError ENOSPC / EDQUOT, or as a FAISS
RuntimeError whose text ends in the C library's "No space left on device".
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from search.errors import GlimpseError

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SQLITE_FULL, SQLITE_IOERR_SHMSIZE = 13, 4874


class DiskFull(GlimpseError):
    """No space left while a run wrote ``path`` during ``step`` (exit 1, no traceback)."""

    def __init__(self, path: str | os.PathLike, step: str, live_unchanged: bool = True):
        self.path, self.step = str(path), step
        where = mount_point(path)
        place = where if where == self.path else f"{where} ({self.path})"
        outcome = "the live index is unchanged" if live_unchanged else "the new index was published"
        super().__init__(
            f"no space left on {place} while {step}; {outcome}. Free some space and run the job "
            "again: committed batches are kept"
        )


def disk_full_cause(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain (itself, what it wraps or was raised from) that says the
    disk is full, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
            return exc
        if isinstance(exc, sqlite3.Error) and (
            getattr(exc, "sqlite_errorcode", None) in (SQLITE_FULL, SQLITE_IOERR_SHMSIZE)
            or "database or disk is full" in str(exc)
        ):
            return exc
        if isinstance(exc, RuntimeError) and any(os.strerror(e) in str(exc) for e in FULL_ERRNOS):
            return exc  # FAISS: "write error in FILE: N != M (No space left on device)"
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__  # .orig: SQLAlchemy's DBAPIError
    return None


def is_disk_full(exc: BaseException | None) -> bool:
    return disk_full_cause(exc) is not None


def mount_point(path: str | os.PathLike) -> str:
    """The mount point holding ``path`` (the "device" a user frees space on)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)
