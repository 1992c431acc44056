"""Huge one-colour PNGs, written row by row: a few hundred KB on disk, hundreds of MB once decoded.

What a hostile upload looks like (13,000 x 13,000 RGBA: 657 KB on the wire, 676 MB
decoded). Written without ever holding the pixels, so making one costs no memory.
Used by bench/upload_memory.py and tests/test_upload_budget.py.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

_COLOUR_TYPES = {"RGB": (2, 3), "RGBA": (6, 4)}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _deflate_repeated(block: bytes, times: int, tail: bytes) -> bytes:
    """zlib stream of ``block * times + tail``, compressing ``block`` once.

    After a full flush deflate starts afresh (empty history, byte-aligned), so the
    compressed block can be repeated as is; the checksum is computed over all the data.
    """

    def raw(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    unit, checksum = raw(block), 1
    for _ in range(times):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(tail, checksum)
    last = zlib.compressobj(9, zlib.DEFLATED, -15)
    end = last.compress(tail) + last.flush(zlib.Z_FINISH)
    return b"\x78\xda" + unit * times + end + struct.pack(">I", checksum)


def write_png(
    path: str | os.PathLike, width: int, height: int, mode: str = "RGBA", colour: tuple[int, ...] = (200, 30, 60, 128)
) -> Path:
    """A valid ``width`` x ``height`` PNG of one colour at ``path`` (written atomically; kept if it exists)."""
    path = Path(path)
    if path.exists():
        return path
    colour_type, channels = _COLOUR_TYPES[mode]
    row = b"\x00" + bytes(colour[:channels]) * width  # filter byte "none", then the pixels
    rows_per_block = max(1, (4 << 20) // len(row))
    data = _deflate_repeated(row * rows_per_block, height // rows_per_block, row * (height % rows_per_block))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)))
        for i in range(0, len(data), 1 << 20):
            f.write(_chunk(b"IDAT", data[i : i + (1 << 20)]))
        f.write(_chunk(b"IEND", b""))
    os.replace(tmp, path)
    return path


def header_only_png(width: int, height: int, mode: str = "RGBA") -> bytes:
    """A PNG of a few dozen bytes whose header claims ``width`` x ``height`` (``mode``: RGB or RGBA) and whose
    pixel data stops at once: a decoder that trusts the header allocates the whole image before it finds out
    (a decompression bomb; a failed decode's memory, issue 24)."""
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[mode][0], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + _chunk(b"IEND", b"")
    )
