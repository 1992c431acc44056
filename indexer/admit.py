"""What the indexer agrees to read: a file within the size cap whose first bytes are an image header.

Both are checked before the file is read whole or hashed, so a 4 GB file
named ``.jpg`` (sparse, or a disk image someone renamed) fails in
milliseconds instead of being read, hashed and fed to a decoder.
"""

from __future__ import annotations

import os

from search.media.decode import ImageDecodeError, probe_file
from search.settings import settings


class FileRefused(ImageDecodeError):
    """The file was not read: too large, or it does not start like a supported image."""


def size_error(size: int) -> str | None:
    """Why a file of ``size`` bytes is not read, or None. The cap (GLIMPSE_MAX_FILE_MB: larger than any
    photo or scan worth searching) is read now, in the process doing the reading."""
    most_mb = float(settings()["GLIMPSE_MAX_FILE_MB"])
    if size <= int(most_mb * (1 << 20)):
        return None
    return (
        f"file is {size / (1 << 20):,.0f} MB, over the {most_mb:g} MB limit for indexing "
        f"(GLIMPSE_MAX_FILE_MB); not read"
    )


def admit(path: str) -> tuple[dict, int]:
    """The file's header information (``search.media.decode.probe``) and size, read from its
    first bytes only; raises ImageDecodeError (FileRefused for the size cap) or OSError."""
    size = os.stat(path).st_size
    refused = size_error(size)
    if refused:
        raise FileRefused(refused)
    return probe_file(path), size
