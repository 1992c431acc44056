"""On-demand thumbnails, cached on disk under Paths.thumbs.

The cache key includes the source file's mtime and size, so an edited photo
gets a new thumbnail (and a new ETag) without any invalidation step; the older
file for the same id and size is removed when the new one is written.
Writes go to a temporary name and are renamed into place, so concurrent
requests for the same thumbnail never see half a JPEG.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from search.images import load_rgb_bounded

SIZES = (160, 320, 640)
DEFAULT_SIZE = 320
QUALITY = 82


def thumbnail(thumbs_dir: Path, image_id: int, source: str, size: int = DEFAULT_SIZE) -> tuple[Path, str]:
    """Path of the cached JPEG thumbnail and its ETag; made now if missing.

    Raises FileNotFoundError when the source is gone, ImageDecodeError when it
    cannot be decoded.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    st = os.stat(source)
    tag = f"{image_id}-{size}-{st.st_mtime_ns:x}-{st.st_size:x}"
    folder = Path(thumbs_dir) / f"{image_id % 256:02x}"
    out = folder / f"{tag}.jpg"
    if out.is_file():
        return out, tag
    img = load_rgb_bounded(source, size)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{tag}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        img.save(tmp, "JPEG", quality=QUALITY, optimize=True, progressive=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    for old in folder.glob(f"{image_id}-{size}-*.jpg"):
        if old != out:
            old.unlink(missing_ok=True)
    return out, tag
