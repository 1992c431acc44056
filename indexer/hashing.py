"""Content hashes: how the indexer recognises moved, copied and touched files."""

from __future__ import annotations

import hashlib
import os

from indexer.admit import size_error


def bytes_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_hash(path: str) -> str | None:
    """blake2b-128 of a file's bytes (None if it cannot be read, or is over GLIMPSE_MAX_FILE_MB:
    the indexer never reads such a file)."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            if size_error(os.fstat(f.fileno()).st_size):
                return None
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
