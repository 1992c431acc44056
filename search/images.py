"""Decode any supported image file into an RGB Pillow image, safely.

Shared by the indexer, query-by-image, thumbnails and training so that every
path treats transparency, EXIF orientation and oversized files the same way.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF support is optional.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # pragma: no cover - depends on optional package
    HEIF_AVAILABLE = False

# Decompression-bomb guard: ~ 179 MP, four times a 45 MP camera frame.
MAX_IMAGE_PIXELS = int(os.environ.get("GLIMPSE_MAX_IMAGE_PIXELS", 179_000_000))
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Truncated files must fail loudly, never be half-decoded into a grey vector.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    | ({".heic", ".heif"} if HEIF_AVAILABLE else set())
)

Source = Union[str, os.PathLike, BinaryIO, bytes]


class ImageDecodeError(Exception):
    """The file is not a decodable image (or is too large to decode safely)."""


def is_image_path(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def flatten_to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """RGB with transparency composited on white.

    A bare ``convert("RGB")`` drops alpha and leaves whatever colour sits under
    transparent pixels (usually black), which ruins icons and emoji.
    """
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, background)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def load_rgb(source: Source, draft_size: int | None = None) -> Image.Image:
    """Open, orient and flatten an image; raise ImageDecodeError on any failure.

    ``draft_size`` lets JPEG decoding run at a reduced DCT scale (1/2, 1/4,
    1/8) as long as both sides stay >= draft_size: several times cheaper for
    phone photos that are resized to a few hundred pixels anyway.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x the limit; we want a hard refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(
                        f"image is {img.width}x{img.height} pixels, over the "
                        f"{MAX_IMAGE_PIXELS:,} pixel limit (GLIMPSE_MAX_IMAGE_PIXELS)"
                    )
                if draft_size and img.format == "JPEG":
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return flatten_to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or exc.__class__.__name__
        raise ImageDecodeError(f"cannot decode image: {msg}") from exc


def to_uint8_array(img: Image.Image) -> np.ndarray:
    """HWC uint8 RGB array of a preprocessed image (cheap to send between processes)."""
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy: torch.from_numpy may wrap it


def probe(source: Source) -> dict:
    """Cheap header read: format, size (as displayed), EXIF date; no pixel decode.

    Also ``mode``, ``progressive`` and EXIF ``orientation``: what a GPU decoder needs to know.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as img:
        info = {"format": img.format, "width": img.width, "height": img.height, "taken_at": None,
                "mode": img.mode, "progressive": bool(img.info.get("progressive") or img.info.get("progression")),
                "orientation": None}
        try:
            exif = img.getexif()
            orientation = exif.get(0x0112)
            info["orientation"] = orientation if orientation in range(1, 9) else None
            if orientation in (5, 6, 7, 8):
                info["width"], info["height"] = img.height, img.width
            date = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
            if date:
                info["taken_at"] = str(date).strip("\x00 ")
        except Exception:
            pass
        return info
