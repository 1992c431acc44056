"""Decode any supported image file into an RGB Pillow image, safely.

Shared by the indexer, query-by-image, thumbnails and training so that every
path treats transparency, EXIF orientation and oversized files the same way.

Decodes for a running server (query images, thumbnails) go through
``load_rgb_bounded``: they share one memory budget, keep a single full-size
copy and hand the memory back afterwards, so a few hostile uploads cannot
take the machine's RAM. The indexer's workers decode one file at a time each
and use ``load_rgb``.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import platform
import threading
import traceback
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageMode, ImageOps, UnidentifiedImageError

from search.errors import GlimpseError
from search.settings import settings

try:  # HEIC/HEIF support is optional.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_AVAILABLE = True
except Exception:  # noqa: BLE001  # pragma: no cover - depends on optional package
    HEIF_AVAILABLE = False

# The decompression-bomb guard is ours, not Pillow's: every open here checks the header's size against
# GLIMPSE_MAX_IMAGE_PIXELS (max_image_pixels) before a pixel is decoded, read when the decode happens, so
# an Engine or app built with its own settings gets its own limit. Pillow's limit is one global for the
# process, frozen when set; it is switched off so it cannot refuse below ours.
Image.MAX_IMAGE_PIXELS = None
# Should anything set Pillow's limit again, it must refuse rather than only warn between 1x and 2x it.
# Set once for the process: ``warnings.catch_warnings`` around each decode is not thread-safe in a server.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
# Truncated files must fail loudly, never be half-decoded into a grey vector.
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
    | ({".heic", ".heif"} if HEIF_AVAILABLE else set())
)

Source = str | os.PathLike | BinaryIO | bytes


class ImageDecodeError(GlimpseError):
    """The file is not a decodable image (or is too large to decode safely)."""


class ImageTooLarge(ImageDecodeError):
    """More pixels than GLIMPSE_MAX_IMAGE_PIXELS (a server answers 413 for an upload like that)."""


def is_image_path(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"avif"}
SUPPORTED_FORMATS = "JPEG, PNG, GIF, WebP, BMP, TIFF or HEIC"


def sniff(data: bytes) -> str | None:
    """Image format from the first 16 bytes, or None when it is not an image we decode.

    Decoders are where image libraries have had their bugs: bytes that do not
    start like a supported format never reach one.
    """
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


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel: multi-band modes take 4 (RGB too), single bands their sample size."""
    if len(ImageMode.getmode(mode).bands) > 1:
        return 4
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def max_image_pixels(conf: Mapping[str, Any] | None = None) -> int:
    """The decompression-bomb limit (GLIMPSE_MAX_IMAGE_PIXELS; ~179 MP by default, four times a 45 MP
    camera frame) of ``conf``, else of this process."""
    return int((settings() if conf is None else conf)["GLIMPSE_MAX_IMAGE_PIXELS"])


@contextlib.contextmanager
def _opened(source: Source, conf: Mapping[str, Any] | None = None) -> Iterator[Image.Image]:
    """``Image.open`` with the pixel limit checked on the header and every failure (also
    in the caller's block, such as ``load()``) turned into ImageDecodeError."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    limit = max_image_pixels(conf)
    try:
        with Image.open(source) as img:
            if img.width * img.height > limit:
                raise ImageTooLarge(
                    f"image is {img.width}x{img.height} pixels, over the "
                    f"{limit:,} pixel limit (GLIMPSE_MAX_IMAGE_PIXELS)"
                )
            yield img
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a recognised image format") from exc
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or exc.__class__.__name__
        # The decoder's finished frames (Pillow's ImageFile.load) hold the decoder, and so the full-size
        # pixels it was filling: a chained traceback would keep them (196 MB for a 68-byte PNG claiming
        # 7000 x 7000) until the request's exception is dropped, past the trim that should return them.
        traceback.clear_frames(exc.__traceback__)
        raise ImageDecodeError(f"cannot decode image: {msg}") from exc


def load_rgb(source: Source, draft_size: int | None = None) -> Image.Image:
    """Open, orient and flatten an image; raise ImageDecodeError on any failure.

    ``draft_size`` lets JPEG decoding run at a reduced DCT scale (1/2, 1/4,
    1/8) as long as both sides stay >= draft_size: several times cheaper for
    phone photos that are resized to a few hundred pixels anyway.
    For the indexer's workers (one decode at a time each) and training; a
    server decodes through ``load_rgb_bounded``.
    """
    return flatten_to_rgb(load_upright(source, draft_size))


def load_upright(source: Source, draft_size: int | None = None) -> Image.Image:
    """``load_rgb`` before flattening: upright, transparency kept (the indexer fingerprints it first)."""
    with _opened(source) as img:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        return ImageOps.exif_transpose(img)


def header_size(source: Source, conf: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """Width and height from the header alone (no pixel decoded); ImageTooLarge over GLIMPSE_MAX_IMAGE_PIXELS."""
    with _opened(source, conf) as img:
        return img.size


# ------------------------------------------------------------------ bounded decoding (server)
class DecodeBudget:
    """A semaphore weighted in bytes: decodes wait until their decoded size fits in what is left.

    First come, first served (a large decode is not starved by a stream of small
    ones); a decode larger than the whole budget waits until it runs alone.
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._free = self.capacity
        self._cond = threading.Condition()
        self._queue: deque = deque()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        weight = max(1, min(int(nbytes), self.capacity))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while self._queue[0] is not ticket or self._free < weight:
                self._cond.wait()
            self._queue.popleft()
            self._free -= weight
            self._cond.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._cond:
                self._free += weight
                self._cond.notify_all()


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(conf: Mapping[str, Any] | None = None) -> DecodeBudget:
    """The budget for GLIMPSE_DECODE_BUDGET_MB of ``conf`` (else of this process), read now.

    Memory is the process's, so every Engine and app with the same budget shares one; one built with
    another value gets its own."""
    capacity = max(1, int((settings() if conf is None else conf)["GLIMPSE_DECODE_BUDGET_MB"] * (1 << 20)))
    with _budgets_lock:
        budget = _budgets.get(capacity)
        if budget is None:
            budget = _budgets[capacity] = DecodeBudget(capacity)
        return budget


# Reduce to no less than this many times the wanted size before the final resize: box-reducing
# by an integer factor first and resampling the rest is indistinguishable from resampling the
# whole (Pillow's ``reducing_gap`` advice: 3 and up).
REDUCING_GAP = 3
# Flatten and reduce a large image this many bytes of rows at a time, so that the decoded image
# is the only full-size copy (a whole-image convert or reduce would make another).
_STRIP_BYTES = 8 << 20
# glibc keeps freed memory in its arenas; after a decode this large it is handed back to the OS.
TRIM_AFTER_BYTES = 32 << 20


def _find_malloc_trim():
    if platform.system() != "Linux":
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only; musl and others have no such symbol
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # EXIF orientation -> what shows the image upright (as ImageOps)


def _flat_reduced(img: Image.Image, factor: int) -> Image.Image:
    """RGB, transparency on white, ``factor`` times smaller, built strip by strip."""
    w, h = img.size
    if w * h * 4 <= _STRIP_BYTES and factor == 1:
        return flatten_to_rgb(img)
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    rows = max(1, _STRIP_BYTES // (4 * w * factor)) * factor
    for y in range(0, h, rows):
        # Compositing on white, then averaging, equals averaging premultiplied colours, then compositing.
        strip = flatten_to_rgb(img.crop((0, y, w, min(h, y + rows))))
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, y // factor))
    return out


def load_rgb_bounded(source: Source, size: int, conf: Mapping[str, Any] | None = None) -> Image.Image:
    """Decode for a query or a thumbnail of ``size`` pixels: upright, flattened RGB, reduced to
    about ``REDUCING_GAP`` times ``size`` on the short side, under the decode budget and pixel
    limit of ``conf`` (the Engine's or app's settings; default: this process's).

    JPEGs decode at a reduced DCT scale (the indexer's draft mode, so a file still finds its
    own vector); other formats are decoded whole (Pillow cannot do less) and reduced right
    away. The budget (GLIMPSE_DECODE_BUDGET_MB) bounds the decoded bytes in flight across
    threads, and memory goes back to the OS after a large decode, whether it succeeded or not.
    """
    weight = 0
    budget = decode_budget(conf)
    try:
        with _opened(source, conf) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))
            w, h = img.size
            factor = max(1, min(w, h) // (REDUCING_GAP * size))
            weight = w * h * _bytes_per_pixel(img.mode) + (-(-w // factor)) * (-(-h // factor)) * 4
            out = None
            with budget.hold(weight):
                try:
                    img.load()
                    try:
                        method = _TRANSPOSE.get(img.getexif().get(0x0112, 1))
                    except Exception:  # noqa: BLE001 - a broken EXIF block leaves the image as stored
                        method = None
                    out = _flat_reduced(img, factor)
                finally:
                    if out is not img:  # a small RGB image is its own result
                        img.close()  # the full-size pixels go before the budget is handed back
    finally:
        # Pillow allocates the full size before it decodes a row, so a 68-byte PNG claiming 7000 x 7000
        # fails only after taking 196 MB; freed, but kept by glibc in the thread's arena (each server
        # thread its own) unless handed back here, on the failure path too.
        if weight >= TRIM_AFTER_BYTES:
            release_free_memory()
    return out.transpose(method) if method is not None else out


def to_uint8_array(img: Image.Image) -> np.ndarray:
    """HWC uint8 RGB array of a preprocessed image (cheap to send between processes)."""
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy: torch.from_numpy may wrap it


def _header_info(img: Image.Image) -> dict:
    info = {
        "format": img.format,
        "width": img.width,
        "height": img.height,
        "taken_at": None,
        "mode": img.mode,
        "progressive": bool(img.info.get("progressive") or img.info.get("progression")),
        "orientation": None,
    }
    try:
        # A PNG's getexif() decodes the whole image to look for an eXIf chunk after the pixels;
        # the header read is meant to read the header only, so only an early chunk counts.
        exif = Image.Exif() if img.format == "PNG" and "exif" not in img.info else img.getexif()
        orientation = exif.get(0x0112)
        info["orientation"] = orientation if orientation in range(1, 9) else None
        if orientation in (5, 6, 7, 8):
            info["width"], info["height"] = img.height, img.width
        date = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
        if date:
            info["taken_at"] = str(date).strip("\x00 ")
    except Exception:  # noqa: BLE001 - EXIF is optional metadata: a broken block leaves the fields unset
        pass
    return info


def probe(source: Source) -> dict:
    """Cheap header read: format, size (as displayed), EXIF date; no pixel decode.

    Also ``mode``, ``progressive`` and EXIF ``orientation``: what a GPU decoder needs to know.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as img:
        return _header_info(img)


# Enough for any real header (EXIF, ICC profiles, XMP before the first scan); Pillow's JPEG
# reader skips junk one byte at a time, so a fake header over gigabytes of zeros would
# otherwise keep a worker busy for minutes.
HEADER_READ_LIMIT = 16 << 20
# Pillow's WebP and pillow-heif's openers read the whole file: for them the size cap is the bound.
_WHOLE_FILE_OPENERS = {"webp", "heif"}


class _ReadLimit(io.RawIOBase):
    """A file that refuses to hand out more than ``limit`` bytes in all (seeks are free)."""

    def __init__(self, f: io.BufferedIOBase | BinaryIO, limit: int):
        self._f, self._left, self.limit = f, limit, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buf) -> int:
        if self._left <= 0:
            raise ImageDecodeError(f"no image header in the first {self.limit >> 20} MiB; not read further")
        n = self._f.readinto(memoryview(buf)[: self._left])  # type: ignore[union-attr]  # every caller passes a buffered binary file
        self._left -= n or 0
        return n


def probe_file(path: str, read_limit: int = HEADER_READ_LIMIT) -> dict:
    """``probe`` for a file on disk, reading as little as it can: the first bytes must look
    like a supported format, and the header must be found within ``read_limit`` bytes.
    Raises ImageDecodeError (ImageTooLarge over the pixel limit), FileNotFoundError."""
    with open(path, "rb", buffering=0) as raw:
        kind = sniff(raw.read(16))
        if kind is None:
            raise ImageDecodeError(f"not an image: the first bytes are not those of a {SUPPORTED_FORMATS} file")
        raw.seek(0)
        limited = raw if kind in _WHOLE_FILE_OPENERS else _ReadLimit(raw, read_limit)
        with _opened(io.BufferedReader(limited)) as img:
            return _header_info(img)
