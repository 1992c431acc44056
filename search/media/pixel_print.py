"""A pixel print of each image, independent of the embedding model, to verify near-duplicates.

What is stored (computed once by the indexer from the image it decoded; zlib-compressed, median 1.4 KB for
a drawing with its alpha, ~3.1 KB for a photo): luminance on a 64x64 grid (the image squashed to a
square, transparency composited on white), chroma (Cb, Cr) on 8x8, and, for an image with transparency,
its alpha on 64x64. Luminance on
black follows from the same bytes (``Y_black = Y_white - 255 * (1 - alpha)``, exact through box
averaging) and chroma is the same on white and on black, so a copy flattened onto either matches.

Comparing two fingerprints (:func:`distances`) searches for the crop that aligns them: one image is
taken as a crop of the other, each of its four sides moved inward by 0 to ``MAX_CROP`` of the side
(coordinate descent over a grid of steps), both ways round, on every background that applies; the box
found is then refined between the steps on the fine grid (a 10% crop of a 128-pixel icon is 9.4%).
At that box both are compared: mean absolute luminance difference over the pictures' own contrast (so
thin line icons are not all "close" because they are mostly white) on 16x16 and, for sources of
``DETAIL_MIN`` pixels or more, on 32x32; and the chroma difference at 2x2 (colour variants of one
drawing differ there; finer chroma cannot be aligned from an 8x8 grid). The distance is the largest; a
copy scores near 0, a different picture near 1 or more. Pairs still in doubt are tried again with one
turned by a few degrees. Resizing, recompression and format changes barely move these grids; crops and
small rotations are aligned away. Look-alike series (a drawing in several stroke weights) can score as
close as a crop: the finder's grouping refuses such ambiguous matches (``search.vectors.duplicates``).

Each comparison also gives a *shift*: how far the pictures' edges would have to move to explain what is
left of their difference at that alignment (:func:`_shift`). A simple drawing has few edges, so its copy
differs little; a different simple drawing of the same outline (a spade and a club, a disc and a hexagon,
a square and a smaller rounded one) differs over areas that no small move explains, while its distance can
be as small as a crop's. The finder refuses a loose match whose shift is over ``SHIFT_MAX``.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple, cast

import numpy as np
from PIL import Image

VERSION = 2
FINE = 64  # luminance and alpha as stored
SIDE = 32  # luminance grid the alignment searches on (the stored one averaged 2x2)
CSIDE = 8  # chroma grid
GRID = 16  # alignment grid for luminance (CGRID for chroma)
FGRID = 32  # the fine check's grid, at the alignment found
# The fine check needs a source of this many pixels a side: from a smaller one (a 90-pixel JPEG), 32x32
# cells of 64x64 stored cells hold resampling and ringing, not detail (bench.duplicates quality: JPEG
# q75 + 70% copies 84% -> 96% found, different images verified +3%).
DETAIL_MIN = 2 * FINE
PRINT_DRAFT = 2 * FINE  # a JPEG decoded in draft mode for a print keeps at least this many pixels a side
CGRID = 2
MAX_CROP = 0.125  # each side of a crop may move inward by this share of the image
STEPS = np.linspace(0.0, MAX_CROP, 6)  # 0, 2.5%, 5%, 7.5%, 10%, 12.5%
MOVES = (0.0125, 0.00625)  # refinement between the steps: half and a quarter of one
ROUNDS = 1
KEEP = 0.5  # share of the whole picture's contrast a crop must keep (0.7 refused true 10% crops of icons)
CONTRAST_FLOOR = 6.0  # grey levels: keeps a flat picture's relative error finite
CHROMA_SCALE = 12.0  # grey levels of mean chroma difference that count as 1.0
# Small rotations: where the upright comparison is neither a clear match nor clearly different (or close
# but with a shift over SHIFT_MAX: a simple shape turned 4 degrees), the other image is also turned by each
# of these angles; a turned match must be ROT_PENALTY times closer
# (one more degree of freedom finds look-alikes too: measured on bench.duplicates quality, 1.5 kept the
# wrongly grouped images level while 2- and 4-degree rotations went from 40/12% to 88/64% found).
ANGLES = (-4.0, -2.0, 2.0, 4.0)
ROT_FROM, ROT_TO = 0.1, 0.6
ROT_PENALTY = 1.5
# Candidate views (search.vectors.print_candidates): luminance on a VIEW x VIEW grid, whole and as centred
# crops by these STEPS indices (0, 5%, 10% a side), on white and, for a transparent image, on black.
VIEW = 16
VIEW_CROPS = (0, 2, 4)
VIEW_MIN_CONTRAST = 2.0  # grey levels (rms over the grid): flatter views say nothing and are left out
# A loose match (search.vectors.duplicates) must be explained by its edges moving by at most this many
# cells of the fine grid (FGRID: 1/32 of the side); only where both sources have DETAIL_MIN pixels.
# Measured (bench.duplicates quality, two collections; copies of the sample photos): loose planted copies
# reach 0.23 (a JPEG q40 drawing, a photo turned 2 degrees), pairs the bench counts as re-uploads (16x16
# twins, thin circles of two stroke weights among them) 0.29; look-alikes as close as a crop, 0.31-0.65.
# 0.2 loses copies, 0.4 refuses fewer look-alikes (BENCHMARKS.md, issue 23).
SHIFT_MAX = 0.3
SHIFT_FLOOR = 0.5  # grey levels of mean gradient: a flat picture's shift stays finite
SIGNAL = "aligned-thumbnail-v4"  # the comparison's name (the stored print is still VERSION 2)
_HEAD = 3  # version byte, flags byte, the source's short side in pixels (at most 255)
_HAS_ALPHA = 1


def pixel_print(img: Image.Image) -> bytes:
    """The stored fingerprint of an upright image (any mode; alpha kept if it has any)."""
    alpha = None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        a = img.getchannel("A")
        if cast(tuple[int, int], a.getextrema())[0] < 255:
            alpha = a
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img, mask=a)
    else:
        flat = img.convert("RGB")
    # A large decode is reduced by whole factors first (cheap), then averaged to the grid.
    factor = max(1, min(flat.size) // (4 * FINE))
    if factor > 1:
        flat = flat.reduce(factor)
        alpha = alpha.reduce(factor) if alpha is not None else None
    y, cb, cr = flat.convert("YCbCr").split()
    parts = [
        y.resize((FINE, FINE), Image.Resampling.BOX).tobytes(),
        cb.resize((CSIDE, CSIDE), Image.Resampling.BOX).tobytes(),
        cr.resize((CSIDE, CSIDE), Image.Resampling.BOX).tobytes(),
    ]
    if alpha is not None:
        parts.append(alpha.resize((FINE, FINE), Image.Resampling.BOX).tobytes())
    # Drawings and icons compress well (median 1.4 KB with alpha); a photo's print stays near 3 KB of its 4.2.
    head = bytes([VERSION, _HAS_ALPHA if alpha is not None else 0, min(255, min(img.size))])
    return head + zlib.compress(b"".join(parts), 6)


class Prints(NamedTuple):
    """Decoded prints, one row each: luminance on white and on black (alignment grid and fine grid),
    chroma, alpha present."""

    white: np.ndarray  # (n, SIDE, SIDE) float32
    black: np.ndarray  # (n, SIDE, SIDE) float32, equal to white where there is no alpha
    chroma: np.ndarray  # (n, 2, CSIDE, CSIDE) float32
    has_alpha: np.ndarray  # (n,) bool
    fine_white: np.ndarray  # (n, FINE, FINE) float32
    fine_black: np.ndarray  # (n, FINE, FINE) float32
    detailed: np.ndarray  # (n,) bool: the source had at least FINE pixels a side (its fine grid holds detail)


def decode(blobs: list[bytes]) -> Prints:
    """Arrays of stored prints (ValueError on a blob of another version or size)."""
    n, f2, c2 = len(blobs), FINE * FINE, CSIDE * CSIDE
    fine_white = np.empty((n, FINE, FINE), np.float32)
    fine_black = np.empty_like(fine_white)
    chroma = np.empty((n, 2, CSIDE, CSIDE), np.float32)
    has_alpha = np.zeros(n, bool)
    detailed = np.zeros(n, bool)
    for i, blob in enumerate(blobs):
        if len(blob) < _HEAD or blob[0] != VERSION:
            raise ValueError("pixel print of an unknown version")
        try:
            raw = np.frombuffer(zlib.decompress(blob[_HEAD:]), np.uint8).astype(np.float32)
        except zlib.error as exc:
            raise ValueError("pixel print is corrupt") from exc
        alpha = bool(blob[1] & _HAS_ALPHA)
        detailed[i] = blob[2] >= DETAIL_MIN
        if len(raw) != f2 + 2 * c2 + (f2 if alpha else 0):
            raise ValueError("pixel print of the wrong size")
        fine_white[i] = raw[:f2].reshape(FINE, FINE)
        chroma[i] = raw[f2 : f2 + 2 * c2].reshape(2, CSIDE, CSIDE)
        if alpha:
            a = raw[f2 + 2 * c2 :].reshape(FINE, FINE) / 255.0
            fine_black[i] = np.maximum(fine_white[i] - 255.0 * (1.0 - a), 0.0)
            has_alpha[i] = True
        else:
            fine_black[i] = fine_white[i]

    return Prints(_half(fine_white), _half(fine_black), chroma, has_alpha, fine_white, fine_black, detailed)


def is_current(blob: bytes) -> bool:
    """Whether a stored print is of this version (a change of VERSION needs a migration that sets the column
    to NULL, so that the next index run makes the new prints)."""
    return len(blob) >= _HEAD and blob[0] == VERSION


def has_alpha(blob: bytes) -> bool:
    """Whether a stored print is of an image with transparency (read from its header alone)."""
    return len(blob) >= _HEAD and bool(blob[1] & _HAS_ALPHA)


def is_detailed(blob: bytes) -> bool:
    """Whether a stored print's source had ``DETAIL_MIN`` pixels a side or more (read from its header alone)."""
    return len(blob) >= _HEAD and blob[2] >= DETAIL_MIN


def take(p: Prints, rows: np.ndarray) -> Prints:
    """The prints of ``rows``."""
    return Prints(*(x[rows] for x in p))


def _area_matrix(lo: np.ndarray, hi: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
    """(len(lo), n_out, n_in) weights: output cell i averages the input over its share of [lo, hi]
    (fractions of the side), each input pixel weighted by how much of it the cell covers."""
    lo, hi = np.asarray(lo, np.float32) * n_in, np.asarray(hi, np.float32) * n_in
    edges = lo[:, None] + (hi - lo)[:, None] * np.arange(n_out + 1, dtype=np.float32)[None, :] / n_out
    a, b = edges[:, :-1, None], edges[:, 1:, None]
    j = np.arange(n_in, dtype=np.float32)[None, None, :]
    overlap = np.clip(np.minimum(b, j + 1) - np.maximum(a, j), 0.0, None)
    return overlap / (b - a)


def _table(n_out: int, n_in: int) -> np.ndarray:
    """Area matrices for every (start, end) step pair: ``[i, j]`` covers [STEPS[i], 1 - STEPS[j]]."""
    i, j = np.meshgrid(np.arange(len(STEPS)), np.arange(len(STEPS)), indexing="ij")
    mats = _area_matrix(STEPS[i.ravel()], 1.0 - STEPS[j.ravel()], n_out, n_in)
    return mats.reshape(len(STEPS), len(STEPS), n_out, n_in).astype(np.float32)


_LUMA = _table(GRID, SIDE)
_FINE = _table(FGRID, FINE)
_CHROMA = _table(CGRID, CSIDE)


def _contrast(x: np.ndarray) -> np.ndarray:
    """Mean absolute deviation of each grid from its mean."""
    flat = x.reshape(*x.shape[:-2], -1)
    dev = flat - flat.mean(axis=-1, keepdims=True)
    np.abs(dev, out=dev)
    return dev.mean(axis=-1)


def _luma_distance(a: np.ndarray, b: np.ndarray, contrast_a: np.ndarray, contrast_b: np.ndarray) -> np.ndarray:
    """How far apart two grids are, over their mean contrast (so thin line art is not "close" to every
    other line drawing for being mostly white): the larger of the mean absolute difference and a quarter
    of the largest difference of a 2x2 block (a small region that differs, such as another glyph in the
    same frame)."""
    diff = np.abs(a - b)
    blocks = diff[..., ::2, ::2] + diff[..., 1::2, ::2] + diff[..., ::2, 1::2] + diff[..., 1::2, 1::2]
    worst = blocks.reshape(*blocks.shape[:-2], -1).max(axis=-1) / 4.0
    mean = diff.reshape(*diff.shape[:-2], -1).mean(axis=-1)
    contrast = np.maximum(0.5 * (contrast_a + contrast_b), CONTRAST_FLOOR)
    return np.maximum(mean, worst / 4.0) / contrast


def _mean_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = np.abs(a - b)
    return diff.reshape(*diff.shape[:-2], -1).mean(axis=-1)


def _as_crop(big: np.ndarray, small: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best luminance distance taking ``small`` as a crop of ``big`` (both (P, S, S)), and its box as step
    indices for x and y ((P, 2) each: start, end).

    The search minimises the mean absolute difference: first over every centred crop (each axis's two
    sides moved alike, all 36 at once: an even crop is a valley one side at a time cannot walk into),
    then each side in turn over every step, the other three held. A crop may not throw away most of
    what the picture shows (a frame cropped off a blank page would otherwise "match" any blank page): a
    box keeping less than ``KEEP`` of the whole's contrast is replaced by the whole picture."""
    p = len(big)
    rows = np.arange(p)
    full = _LUMA[0, 0]
    target = full @ small @ full.T
    steps = np.arange(len(STEPS))
    centred = _LUMA[steps, steps]  # (6, G, S)
    grid = (centred[None, :, None] @ big[:, None, None]) @ np.swapaxes(centred, -1, -2)[None, None]
    grid = grid.reshape(p, -1, GRID, GRID)  # (P, 36, G, G): y step, x step; [:, 0] is the whole picture
    d = _mean_abs(grid, target[:, None])
    best = d.min(axis=1)
    sy, sx = np.divmod(d.argmin(axis=1), len(STEPS))
    by, bx = np.stack([sy, sy], axis=1), np.stack([sx, sx], axis=1)
    for _ in range(ROUNDS):
        for axis, box in ((0, bx), (1, by)):
            for end in (0, 1):
                if end == 0:
                    options = _LUMA[steps[None, :], box[:, 1:2]]  # (P, 6, G, S)
                else:
                    options = _LUMA[box[:, 0:1], steps[None, :]]
                if axis == 0:  # x: rows already sampled, try each column range
                    part = _LUMA[by[:, 0], by[:, 1]] @ big  # (P, G, S)
                    sampled = part[:, None] @ np.swapaxes(options, -1, -2)
                else:
                    part = big @ np.swapaxes(_LUMA[bx[:, 0], bx[:, 1]], -1, -2)  # (P, S, G)
                    sampled = options @ part[:, None]
                d = _mean_abs(sampled, target[:, None])
                pick = d.argmin(axis=1)
                better = d[rows, pick] < best
                best = np.where(better, d[rows, pick], best)
                box[better, end] = pick[better]
    whole = grid[:, 0]
    chosen = _at(_LUMA, big, bx, by)
    lost = _contrast(chosen) < KEEP * _contrast(whole)
    bx[lost], by[lost] = 0, 0
    chosen[lost] = whole[lost]
    return _luma_distance(chosen, target, _contrast(chosen), _contrast(target)), bx, by


def distances(a: Prints, b: Prints) -> np.ndarray:
    """Distance of each pair ``(a[i], b[i])``: 0 for the same pixels, ~1 or more for different pictures
    (:func:`compare` without the shift)."""
    return compare(a, b)[0]


def compare(a: Prints, b: Prints) -> tuple[np.ndarray, np.ndarray]:
    """``(distance, shift)`` of each pair ``(a[i], b[i])``.

    distance: 0 for the same pixels, ~1 or more for different pictures. The crop is found on the alignment
    grid; at that crop the pair is compared on the fine grid too (a different glyph on the same card, a
    thinner stroke of the same circle), and in chroma. Pairs between ``ROT_FROM`` and ``ROT_TO``, and closer
    ones whose shift is over ``SHIFT_MAX``, are compared again with one turned by each of ``ANGLES``.

    shift: at the alignment that gave the distance, how far the pictures' edges would have to move to
    explain the luminance left over, in cells of the fine grid (:func:`_shift`); 0 where either source is
    under ``DETAIL_MIN`` pixels (its fine grid holds resampling, not edges)."""
    p = len(a.white)
    best = np.full(p, np.inf, np.float32)
    shift = np.zeros(p, np.float32)
    if p == 0:
        return best, shift

    def keep(rows: np.ndarray, got: tuple[np.ndarray, np.ndarray], scale: float = 1.0) -> None:
        d = scale * got[0]
        better = d < best[rows]
        best[rows[better]] = d[better]
        shift[rows[better]] = got[1][better]

    # Backgrounds: both as stored (on white); where one has transparency, it on black against the other.
    for rows, ya, yb, fa, fb in (
        (np.arange(p), a.white, b.white, a.fine_white, b.fine_white),
        (np.flatnonzero(a.has_alpha), a.black, b.white, a.fine_black, b.fine_white),
        (np.flatnonzero(b.has_alpha), a.white, b.black, a.fine_white, b.fine_black),
    ):
        if len(rows):
            keep(rows, _compare(a, b, rows, (ya, yb, fa, fb), 0.0))
    # in doubt: neither clearly the same nor clearly different, or close but with an area no edge move explains
    turn = np.flatnonzero(((best > ROT_FROM) | (shift > SHIFT_MAX)) & (best <= ROT_TO))
    for angle in ANGLES if len(turn) else ():
        grids = (a.white, b.white, a.fine_white, b.fine_white)
        keep(turn, _compare(a, b, turn, grids, angle), ROT_PENALTY)
    return best, shift


def _compare(a: Prints, b: Prints, rows: np.ndarray, grids: tuple, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance and shift of the pairs ``rows`` on the given (alignment a, b, fine a, fine b) grids, each
    taken as a crop of the other; with ``angle``, the one taken as the crop is first turned by it (on white)."""
    ya, yb, fa, fb = (g[rows] for g in grids)
    ca, cb = a.chroma[rows], b.chroma[rows]
    detailed = a.detailed[rows] & b.detailed[rows]
    out = np.full(len(rows), np.inf, np.float32)
    moved = np.zeros(len(rows), np.float32)
    for big, small, fbig, fsmall, cbig, csmall in ((ya, yb, fa, fb, ca, cb), (yb, ya, fb, fa, cb, ca)):
        if angle:
            fsmall = _rotate(fsmall, angle, 255.0)
            small = _half(fsmall)
        _, bx, by = _as_crop(big, small)
        target = _at(_FINE, fsmall, np.zeros_like(bx), np.zeros_like(by))
        box = np.stack([STEPS[bx[:, 0]], 1 - STEPS[bx[:, 1]], STEPS[by[:, 0]], 1 - STEPS[by[:, 1]]], 1)
        box, fine = _refine(fbig, target, box)
        # a source under DETAIL_MIN pixels (an icon, a thumbnail-sized copy) has no detail there to compare
        detail = np.where(detailed, _luma_distance(fine, target, _contrast(fine), _contrast(target)), 0.0)
        cf, ct = _half(fine), _half(target)
        luma = _luma_distance(cf, ct, _contrast(cf), _contrast(ct))
        cx = _area_matrix(box[:, 0], box[:, 1], CGRID, CSIDE)[:, None]
        cy = _area_matrix(box[:, 2], box[:, 3], CGRID, CSIDE)[:, None]
        zero = np.zeros_like(bx)
        cdiff = np.abs(cy @ cbig @ np.swapaxes(cx, -1, -2) - _at(_CHROMA, csmall, zero, zero)).mean(axis=(1, 2, 3))
        d = np.maximum(np.maximum(luma, detail), cdiff / CHROMA_SCALE)
        better = d < out
        out = np.where(better, d, out)
        moved = np.where(better, np.where(detailed, _shift(fine, target), 0.0), moved)
    return out, moved


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far, in grid cells, the edges of two aligned grids (P, S, S) would have to move to account for
    their difference: its mean size, each cell's signed difference averaged with its 8 neighbours', over
    their mean gradient (``SHIFT_FLOOR`` at least).

    A copy differs from its original where its edges moved by a fraction of a cell (resampling, JPEG
    ringing, the alignment's last error, a turn), so what it differs by scales with how much edge the
    picture has: a simple shape has little, and its copy differs little. Two different drawings differ
    over whole areas (a spade's point where a club has a lobe), which no small move of their few edges
    explains. The averaging leaves such an area (a patch of one sign) and an edge that moved (a line of one
    sign) as they are, and cancels what changes sign from cell to cell: the grain and texture of a photo
    resampled at another crop, which would otherwise read as a large move."""
    r = a - b
    s = r.shape[-1]
    pad = np.pad(r, ((0, 0), (1, 1), (1, 1)), mode="edge")
    local = sum(pad[:, dy : dy + s, dx : dx + s] for dy in range(3) for dx in range(3)) / 9.0
    diff = np.abs(local).reshape(len(a), -1).mean(axis=1)
    grad = 0.0
    for x in (a, b):
        gx = np.abs(np.diff(x, axis=-1)).reshape(len(x), -1).mean(axis=1)
        gy = np.abs(np.diff(x, axis=-2)).reshape(len(x), -1).mean(axis=1)
        grad = grad + 0.25 * (gx + gy)
    return (diff / np.maximum(grad, SHIFT_FLOOR)).astype(np.float32)


def _refine(fbig: np.ndarray, target: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crop box (P, 4: x0, x1, y0, y1 as shares of the side) refined on the fine grid between the
    alignment's steps: each axis scaled and shifted by each of ``MOVES`` while that lowers the mean
    difference; returns the box and the big image sampled over it."""

    def sample(b: np.ndarray) -> np.ndarray:
        mx = _area_matrix(b[:, 0], b[:, 1], FGRID, FINE)
        my = _area_matrix(b[:, 2], b[:, 3], FGRID, FINE)
        return my @ fbig @ np.swapaxes(mx, -1, -2)

    fine = sample(box)
    cost = _mean_abs(fine, target)
    for step in MOVES:
        for axis in (0, 2):
            for move in ((-step, step), (step, -step), (step, step), (-step, -step)):
                trial = box.copy()
                trial[:, axis] += move[0]
                trial[:, axis + 1] += move[1]
                trial[:, axis] = np.clip(trial[:, axis], 0.0, MAX_CROP + MOVES[0])
                trial[:, axis + 1] = np.clip(trial[:, axis + 1], 1.0 - MAX_CROP - MOVES[0], 1.0)
                got = sample(trial)
                c = _mean_abs(got, target)
                better = c < cost
                cost = np.where(better, c, cost)
                box[better], fine[better] = trial[better], got[better]
    return box, fine


def _half(x: np.ndarray) -> np.ndarray:
    """Each grid averaged 2x2 (the fine grid to the alignment grid)."""
    return 0.25 * (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2])


def _rotate(x: np.ndarray, degrees: float, fill: float) -> np.ndarray:
    """(P, S, S) grids turned about their centre by ``degrees`` (bilinear; outside the grid: ``fill``)."""
    s = x.shape[-1]
    t = np.deg2rad(degrees)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) - (s - 1) / 2.0
    sx = np.cos(t) * xx - np.sin(t) * yy + (s - 1) / 2.0
    sy = np.sin(t) * xx + np.cos(t) * yy + (s - 1) / 2.0
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    out = np.zeros_like(x)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < s) & (yi >= 0) & (yi < s)
            v = np.where(inside[None], x[:, np.clip(yi, 0, s - 1), np.clip(xi, 0, s - 1)], fill)
            out += (wx * wy)[None] * v
    return out


def views(p: Prints) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compact candidate views of decoded prints: ``(rows, whole, vectors, ok)``.

    Each row of ``p`` gives a view per background (white; black too where it has alpha) and per centred
    crop of ``VIEW_CROPS``: its luminance on a ``VIEW`` grid, less its mean, at unit length, so the inner
    product of two views is their correlation. ``rows``: the print each view is of; ``whole``: the view is
    uncropped (those are the ones searched against); ``ok``: the view has contrast enough to mean anything.
    A copy flattened on black is then near its original's black view, and a 10% crop near its original's
    10% view, whatever the embedding model says of them."""
    n = len(p.white)
    alpha = np.flatnonzero(p.has_alpha)
    grids = np.concatenate([p.white, p.black[alpha]])
    of = np.concatenate([np.arange(n), alpha])
    rows, whole, vecs, ok = [], [], [], []
    for step in VIEW_CROPS:
        m = _area_matrix(np.array([STEPS[step]]), np.array([1.0 - STEPS[step]]), VIEW, SIDE)[0]
        v = (m @ grids @ m.T).reshape(len(grids), -1)
        v -= v.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        rows.append(of)
        whole.append(np.full(len(of), step == 0))
        vecs.append(v / np.maximum(norm, 1e-6))
        ok.append(norm[:, 0] >= VIEW_MIN_CONTRAST * VIEW)
    return (np.concatenate(rows), np.concatenate(whole), np.concatenate(vecs).astype(np.float32), np.concatenate(ok))


def _at(table: np.ndarray, img: np.ndarray, bx: np.ndarray, by: np.ndarray) -> np.ndarray:
    """``img`` (P, [C,] S, S) sampled over the boxes given as step indices, with ``table``'s matrices."""
    mx, my = table[bx[:, 0], bx[:, 1]], table[by[:, 0], by[:, 1]]
    if img.ndim == 4:
        mx, my = mx[:, None], my[:, None]
    return my @ img @ np.swapaxes(mx, -1, -2)
