"""Accept an uploaded image: size cap and content sniffing before any decoder sees it.

Decoding is where image libraries have had their bugs, so bytes that do not
start like a supported image never reach Pillow (415), oversized bodies are
cut off while reading (413), and pixel bombs are refused by ``load_rgb``.
"""

from __future__ import annotations

import base64
import binascii

from flask import current_app

from web.config import max_upload_bytes
from web.errors import HttpError

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif"}


def sniff(data: bytes) -> str | None:
    """Image format from the first bytes, or None when it is not an image we decode."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "heif"
    return None


def limit() -> int:
    return max_upload_bytes(current_app.config)


def check_image_bytes(data: bytes) -> bytes:
    if not data:
        raise HttpError(400, "the uploaded file is empty")
    if len(data) > limit():
        raise HttpError(413, f"upload too large: the limit is {limit() // (1024 * 1024)} MiB")
    if sniff(data) is None:
        raise HttpError(415, "not a supported image (JPEG, PNG, GIF, WebP, BMP, TIFF or HEIC)")
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
