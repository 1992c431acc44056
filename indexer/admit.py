"""What the indexer agrees to read: a file within the size cap whose first bytes are an image header.

Both are checked before the file is read whole or hashed, so a 4 GB file
named ``.jpg`` (sparse, or a disk image someone renamed) fails in
milliseconds instead of being read, hashed and fed to a decoder.
"""

from __future__ import annotations

import os

from search.media.decode import ImageDecodeError, probe_file
from search.settings import settings

# Larger than any photo or scan worth searching; GLIMPSE_MAX_FILE_MB raises or lowers it.
MAX_FILE_MB = settings()["GLIMPSE_MAX_FILE_MB"]
MAX_FILE_BYTES = int(MAX_FILE_MB * (1 << 20))


class FileRefused(ImageDecodeError):
    """The file was not read: too large, or it does not start like a supported image."""


def size_error(size: int) -> str | None:
    """Why a file of ``size`` bytes is not read, or None."""
    if size <= MAX_FILE_BYTES:
        return None
    return (
        f"file is {size / (1 << 20):,.0f} MB, over the {MAX_FILE_MB:g} MB limit for indexing "
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
