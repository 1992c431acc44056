"""A pixel print of each image, independent of the embedding model, to verify near-duplicates.

What is stored (about 1.2 KB per image, computed once by the indexer from the image it decoded):
luminance on a 32x32 grid (the image squashed to a square, transparency composited on white),
chroma (Cb, Cr) on 8x8, and, for an image with transparency, its alpha on 32x32. Luminance on
black follows from the same bytes (``Y_black = Y_white - 255 * (1 - alpha)``, exact through box
averaging) and chroma is the same on white and on black, so a copy flattened onto either matches.

Comparing two fingerprints (:func:`distances`) searches for the crop that aligns them: one image is
taken as a crop of the other, each of its four sides moved inward by 0 to ``MAX_CROP`` of the side
(coordinate descent over a grid of steps), both ways round, on every background that applies. At the
best crop both are sampled on a 16x16 grid (area-weighted, so the 2:1 reduction does not alias) and
compared: mean absolute luminance difference over the pictures' own contrast (so thin line icons are
not all "close" because they are mostly white), and the chroma difference at 4x4 (colour variants of
one drawing differ there). The distance is the larger of the two; a copy scores near 0, a different
picture near 1 or more. Resizing, recompression, format changes and small rotations barely move the
16x16 grid; crops are aligned away.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image

VERSION = 1
SIDE = 32  # luminance and alpha grid
CSIDE = 8  # chroma grid
GRID = 16  # comparison grid for luminance (CGRID for chroma)
CGRID = 4
MAX_CROP = 0.125  # each side of a crop may move inward by this share of the image
STEPS = np.linspace(0.0, MAX_CROP, 6)  # 0, 2.5%, 5%, 7.5%, 10%, 12.5%
ROUNDS = 2
KEEP = 0.7  # share of the whole picture's contrast a crop must keep
CONTRAST_FLOOR = 6.0  # grey levels: keeps a flat picture's relative error finite
CHROMA_SCALE = 12.0  # grey levels of mean chroma difference that count as 1.0
SIGNAL = "aligned-thumbnail-v1"
_HEAD = 2  # version byte, flags byte
_HAS_ALPHA = 1


def pixel_print(img: Image.Image) -> bytes:
    """The stored fingerprint of an upright image (any mode; alpha kept if it has any)."""
    alpha = None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        a = img.getchannel("A")
        if a.getextrema()[0] < 255:
            alpha = a
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=a)
    else:
        flat = img.convert("RGB")
    # A large decode is reduced by whole factors first (cheap), then averaged to the grid.
    factor = max(1, min(flat.size) // (4 * SIDE))
    if factor > 1:
        flat = flat.reduce(factor)
        alpha = alpha.reduce(factor) if alpha is not None else None
    y, cb, cr = flat.convert("YCbCr").split()
    parts = [
        bytes([VERSION, _HAS_ALPHA if alpha is not None else 0]),
        y.resize((SIDE, SIDE), Image.BOX).tobytes(),
        cb.resize((CSIDE, CSIDE), Image.BOX).tobytes(),
        cr.resize((CSIDE, CSIDE), Image.BOX).tobytes(),
    ]
    if alpha is not None:
        parts.append(alpha.resize((SIDE, SIDE), Image.BOX).tobytes())
    return b"".join(parts)


class Prints(NamedTuple):
    """Decoded fingerprints, one row each: luminance on white and on black, chroma, alpha present."""

    white: np.ndarray  # (n, SIDE, SIDE) float32
    black: np.ndarray  # (n, SIDE, SIDE) float32, equal to white where there is no alpha
    chroma: np.ndarray  # (n, 2, CSIDE, CSIDE) float32
    has_alpha: np.ndarray  # (n,) bool


def decode(blobs: list[bytes]) -> Prints:
    """Arrays of stored fingerprints (ValueError on a blob of another version or size)."""
    n, s2, c2 = len(blobs), SIDE * SIDE, CSIDE * CSIDE
    white = np.empty((n, SIDE, SIDE), np.float32)
    black = np.empty_like(white)
    chroma = np.empty((n, 2, CSIDE, CSIDE), np.float32)
    has_alpha = np.zeros(n, bool)
    for i, blob in enumerate(blobs):
        if len(blob) < _HEAD or blob[0] != VERSION:
            raise ValueError("fingerprint of an unknown version")
        raw = np.frombuffer(blob, np.uint8, offset=_HEAD).astype(np.float32)
        alpha = bool(blob[1] & _HAS_ALPHA)
        if len(raw) != s2 + 2 * c2 + (s2 if alpha else 0):
            raise ValueError("fingerprint of the wrong size")
        white[i] = raw[:s2].reshape(SIDE, SIDE)
        chroma[i] = raw[s2 : s2 + 2 * c2].reshape(2, CSIDE, CSIDE)
        if alpha:
            a = raw[s2 + 2 * c2 :].reshape(SIDE, SIDE) / 255.0
            black[i] = np.maximum(white[i] - 255.0 * (1.0 - a), 0.0)
            has_alpha[i] = True
        else:
            black[i] = white[i]
    return Prints(white, black, chroma, has_alpha)


def _area_matrix(lo: np.ndarray, hi: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
    """(len(lo), n_out, n_in) weights: output cell i averages the input over its share of [lo, hi]
    (fractions of the side), each input pixel weighted by how much of it the cell covers."""
    lo, hi = np.asarray(lo, np.float32) * n_in, np.asarray(hi, np.float32) * n_in
    edges = lo[:, None] + (hi - lo)[:, None] * np.arange(n_out + 1, dtype=np.float32)[None, :] / n_out
    a, b = edges[:, :-1, None], edges[:, 1:, None]
    j = np.arange(n_in, dtype=np.float32)[None, None, :]
    overlap = np.clip(np.minimum(b, j + 1) - np.maximum(a, j), 0.0, None)
    return overlap / (b - a)


def _sample(img: np.ndarray, box: np.ndarray, n_out: int) -> np.ndarray:
    """``img`` (P, ..., S, S) sampled over ``box`` (P, 4: x0, x1, y0, y1) onto (P, ..., n_out, n_out)."""
    n_in = img.shape[-1]
    mx = _area_matrix(box[:, 0], box[:, 1], n_out, n_in)
    my = _area_matrix(box[:, 2], box[:, 3], n_out, n_in)
    if img.ndim == 4:  # chroma: (P, 2, S, S)
        mx, my = mx[:, None], my[:, None]
    return my @ img @ np.swapaxes(mx, -1, -2)


def _luma_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference over the mean contrast of the two (P, G, G) grids."""
    diff = np.abs(a - b).mean(axis=(-1, -2))
    contrast = 0.5 * (
        np.abs(a - a.mean(axis=(-1, -2), keepdims=True)).mean(axis=(-1, -2))
        + np.abs(b - b.mean(axis=(-1, -2), keepdims=True)).mean(axis=(-1, -2))
    )
    return diff / np.maximum(contrast, CONTRAST_FLOOR)


def _contrast(x: np.ndarray) -> np.ndarray:
    return np.abs(x - x.mean(axis=(-1, -2), keepdims=True)).mean(axis=(-1, -2))


def _as_crop(big: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best luminance distance, and its box, taking ``small`` as a crop of ``big`` (both (P, S, S)).

    A crop may not throw away most of what the picture shows (a frame cropped off a blank page would
    otherwise "match" any blank page): a box whose contrast falls below ``KEEP`` of the whole's is
    not taken."""
    p = len(big)
    target = _sample(small, np.tile(np.array([0.0, 1.0, 0.0, 1.0], np.float32), (p, 1)), GRID)
    box = np.tile(np.array([0.0, 1.0, 0.0, 1.0], np.float32), (p, 1))
    whole = _sample(big, box, GRID)
    floor = KEEP * _contrast(whole)
    best = _luma_distance(whole, target)
    for _ in range(ROUNDS):
        for side in range(4):
            for step in STEPS:
                trial = box.copy()
                trial[:, side] = step if side in (0, 2) else 1.0 - step
                sampled = _sample(big, trial, GRID)
                d = _luma_distance(sampled, target)
                better = (d < best) & (_contrast(sampled) >= floor)
                best = np.where(better, d, best)
                box[better] = trial[better]
    return best, box


def distances(a: Prints, b: Prints) -> np.ndarray:
    """Distance of each pair ``(a[i], b[i])``: 0 for the same pixels, ~1 or more for different pictures."""
    p = len(a.white)
    if p == 0:
        return np.zeros(0, np.float32)
    best = np.full(p, np.inf, np.float32)
    full = np.tile(np.array([0.0, 1.0, 0.0, 1.0], np.float32), (p, 1))
    # Backgrounds: both as stored (on white), or the one with alpha on black against the other.
    pairings = [(a.white, b.white), (a.black, b.white), (a.white, b.black)]
    for ya, yb in pairings:
        for big, small, cbig, csmall in ((ya, yb, a.chroma, b.chroma), (yb, ya, b.chroma, a.chroma)):
            luma, box = _as_crop(big, small)
            cdiff = np.abs(_sample(cbig, box, CGRID) - _sample(csmall, full, CGRID)).mean(axis=(1, 2, 3))
            best = np.minimum(best, np.maximum(luma, cdiff / CHROMA_SCALE))
    return best
