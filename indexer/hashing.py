"""Content hashes: how the indexer recognises moved, copied and touched files."""

from __future__ import annotations

import hashlib
import os

from indexer.admit import size_error, video_size_error
from search.media.video import is_video_path

# A video's identity: its size and three blocks of this size (start, middle, end).
VIDEO_BLOCK = 1 << 20
VIDEO_HASH_PREFIX = "v1:"  # never equal to an image's hash (32 hex digits)


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


def video_hash(path: str) -> str | None:
    """A video's identity without reading it whole: blake2b-128 of its size and its first, middle and
    last MiB, prefixed ``v1:``. Enough to recognise a moved, copied or touched video (a re-encode or an
    edit changes the size or those blocks); a 4 GB file costs 3 MiB of reads. None: unreadable, or
    over GLIMPSE_MAX_VIDEO_MB."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if video_size_error(size):
                return None
            h.update(size.to_bytes(8, "little"))
            for offset in sorted({0, max(0, size // 2 - VIDEO_BLOCK // 2), max(0, size - VIDEO_BLOCK)}):
                f.seek(offset)
                h.update(f.read(VIDEO_BLOCK))
    except OSError:
        return None
    return VIDEO_HASH_PREFIX + h.hexdigest()


def content_hash(path: str, name: str | None = None) -> str | None:
    """The hash the store keeps for the file at ``path``; ``name`` (default ``path``: the walked name,
    when ``path`` is a symlink's target) says whether it is a video."""
    return video_hash(path) if is_video_path(name or path) else file_hash(path)
