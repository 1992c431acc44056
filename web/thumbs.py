"""On-demand thumbnails, cached on disk under Paths.thumbs.

The cache key includes the indexed file's mtime and size, so an edited photo
gets a new thumbnail (and a new ETag) once reindexed, without any invalidation
step; the older file for the same id and size is removed when the new one is written.
Writes go to a temporary name and are renamed into place, so concurrent
requests for the same thumbnail never see half a JPEG. When the cache cannot be
written (a full disk, a read-only mount) the thumbnail is served from memory.

A video's thumbnail is the frame at a moment (``t`` seconds, kept to the tenth in the key: one decode per
moment shown); its moments' thumbnails live side by side, and only another mtime or size removes them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from search.engine import OpenedImage
from search.media.decode import decode_budget, load_rgb_bounded

SIZES = (160, 320, 640)
DEFAULT_SIZE = 320
QUALITY = 82

log = logging.getLogger(__name__)
_cache_failing = threading.Event()  # log a failing cache once, not once per thumbnail


def thumbnail(
    thumbs_dir: Path,
    image: OpenedImage,
    size: int = DEFAULT_SIZE,
    conf: Mapping[str, Any] | None = None,
    video: tuple[float, int] | None = None,
) -> tuple[Path | io.BytesIO, str]:
    """Path of the cached JPEG thumbnail and its ETag; made now if missing (the JPEG in
    memory when the cache cannot be written).

    ``image`` is the verified, open file (Engine.open_image): the thumbnail is decoded from it,
    never from a path, under the decode budget and pixel limit of ``conf`` (the app's settings).
    ``video``: the file is a video; ``(t, frame pixels)``: the moment in seconds and the size of its frames
    as coded (what one decoded frame weighs against the decode budget).
    Raises ImageDecodeError (a VideoDecodeError for a video) when it cannot be decoded.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    image_id, source = image.id, image.file
    file_tag = f"{image_id}-{size}-{image.mtime_ns:x}-{image.size:x}"
    tag = file_tag if video is None else f"{file_tag}-t{round(video[0] * 10)}"
    folder = Path(thumbs_dir) / f"{image_id % 256:02x}"
    out = folder / f"{tag}.jpg"
    if out.is_file():
        return out, tag
    img = load_rgb_bounded(source, size, conf) if video is None else _frame(image, size, conf, *video)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    tmp = folder / f".{tag}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        img.save(tmp, "JPEG", quality=QUALITY, optimize=True, progressive=True)
        os.replace(tmp, out)
    except OSError as exc:
        if not _cache_failing.is_set():
            _cache_failing.set()
            log.warning(
                "thumbnail cache %s cannot be written (%s); serving thumbnails uncached",
                thumbs_dir,
                exc.strerror or exc,
            )
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        data = io.BytesIO()
        img.save(data, "JPEG", quality=QUALITY, optimize=True, progressive=True)
        data.seek(0)
        return data, tag
    if _cache_failing.is_set():
        _cache_failing.clear()
        log.info("thumbnail cache %s is writable again", thumbs_dir)
    for old in folder.glob(f"{image_id}-{size}-*.jpg"):
        if old != out and not old.name.startswith(file_tag + "-t" if video is not None else out.name):
            old.unlink(missing_ok=True)
    return out, tag


def _frame(image: OpenedImage, size: int, conf: Mapping[str, Any] | None, t: float, pixels: int) -> Image.Image:
    """The video's frame at ``t``, under the decode budget: a decoder holds a few full-size frames (a
    reference or two and the one being made, in YUV 4:2:0: 1.5 bytes a pixel), counted as four."""
    from search.media.video import frame_at

    with decode_budget(conf).hold(int(pixels * 1.5 * 4)):
        return frame_at(image.file, t, short_side=size)
