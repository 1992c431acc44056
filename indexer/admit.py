"""What the indexer agrees to read: a file within the size cap whose first bytes are an image header
(a video: within the video cap, and starting like an MP4/MOV, Matroska/WebM or AVI file).

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


# MP4/MOV/3GP start with a box: ``ftyp`` in anything recent; old QuickTime files may open with these.
_MOV_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska / WebM


def video_size_error(size: int) -> str | None:
    """Why a video of ``size`` bytes is not read (over GLIMPSE_MAX_VIDEO_MB), or None."""
    most_mb = float(settings()["GLIMPSE_MAX_VIDEO_MB"])
    if size <= int(most_mb * (1 << 20)):
        return None
    return (
        f"video is {size / (1 << 20):,.0f} MB, over the {most_mb:g} MB limit for indexing "
        f"(GLIMPSE_MAX_VIDEO_MB); not read"
    )


def looks_like_video(head: bytes) -> bool:
    """Whether the first 12 bytes start a container we index: an MP4/MOV box, EBML, or ``RIFF....AVI ``."""
    return head[4:8] in _MOV_BOXES or head[:4] == _EBML or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def admit_video(path: str) -> int:
    """The video's size, once its size and first bytes pass; raises FileRefused or OSError. FFmpeg
    never sees a file that does not start like a video container."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        refused = video_size_error(size)
        if refused:
            raise FileRefused(refused)
        if not looks_like_video(f.read(12)):
            raise FileRefused("not a video file: its first bytes are not an MP4/MOV, Matroska/WebM or AVI header")
    return size
