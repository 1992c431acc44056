"""Accept an uploaded image: size cap, content sniffing and a pixel cap before any decoder sees it.

Decoding is where image libraries have had their bugs, so bytes that do not
start like a supported image never reach Pillow (415), oversized bodies are
cut off while reading (413), and an image with more pixels than
GLIMPSE_MAX_UPLOAD_PIXELS is refused from its header (413): a 600 KB PNG can
claim 13,000 x 13,000 pixels, 676 MB once decoded. What is accepted is decoded
under the engine's memory budget (``search.media.decode.load_rgb_bounded``).
"""

from __future__ import annotations

import base64
import binascii

from search.media.decode import SUPPORTED_FORMATS, ImageTooLarge, header_size, max_image_pixels, sniff
from web.config import app_settings, max_upload_bytes
from web.errors import HttpError


def limit() -> int:
    return max_upload_bytes(app_settings())


def pixel_limit() -> tuple[int, str]:
    """The upload pixel limit and the setting that sets it (the decode limit, when that is lower)."""
    conf = app_settings()
    upload, decode = int(conf["GLIMPSE_MAX_UPLOAD_PIXELS"]), max_image_pixels(conf)
    return (upload, "GLIMPSE_MAX_UPLOAD_PIXELS") if upload <= decode else (decode, "GLIMPSE_MAX_IMAGE_PIXELS")


def check_pixels(data: bytes) -> None:
    """413 when the header claims more pixels than uploads may have; nothing is decoded."""
    most, setting = pixel_limit()
    size: tuple[int, int] | None
    try:
        size = header_size(data, app_settings())
    except ImageTooLarge:  # so large that Pillow would not even open it
        size = None
    if size is None or size[0] * size[1] > most:
        claimed = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels to open"
        raise HttpError(413, f"image too large: {claimed}; the limit for uploads is {most:,} pixels ({setting})")


def check_image_bytes(data: bytes) -> bytes:
    if not data:
        raise HttpError(400, "the uploaded file is empty")
    if len(data) > limit():
        raise HttpError(413, f"upload too large: the limit is {limit() // (1024 * 1024)} MiB")
    if sniff(data) is None:
        raise HttpError(415, f"not a supported image ({SUPPORTED_FORMATS})")
    check_pixels(data)
    return data


def read_upload(files, field: str = "image") -> bytes:
    """Bytes of the multipart file ``field``, checked; never more than the limit + 1 read."""
    storage = files.get(field)
    if storage is None:
        raise HttpError(400, f"no file in the '{field}' field of a multipart/form-data upload")
    return check_image_bytes(storage.stream.read(limit() + 1))


def decode_base64_image(text) -> bytes:
    """clip-retrieval sends plain base64; a ``data:…;base64,`` prefix is tolerated."""
    if not isinstance(text, str):
        raise HttpError(400, "image must be a base64 string")
    text = text.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) > limit() * 4 // 3 + 8:
        raise HttpError(413, f"upload too large: the limit is {limit() // (1024 * 1024)} MiB")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, "image is not valid base64") from None
    return check_image_bytes(data)
