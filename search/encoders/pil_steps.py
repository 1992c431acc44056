"""open_clip's PIL preprocessing (resize, crop, pad) as plain data, replayed without torch.

The query path of a server should not import torch (seconds of start-up and
hundreds of MB resident) just to resize an uploaded photo. ``describe`` turns
open_clip's torchvision ``Compose`` prefix into a list of steps once, at export
time; ``apply`` replays them with Pillow alone. The export checks that both give
identical pixels before the steps are used (see ``search.encoders.onnx_bundle``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from PIL import Image

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


class UnsupportedStep(ValueError):
    """A preprocessing step this module cannot replay: the caller keeps torchvision."""


def _pair(size) -> list[int]:
    if isinstance(size, int):
        return [size, size]
    size = list(size)
    return [int(size[0]), int(size[-1])]


def describe(pil_transform) -> list[dict[str, Any]]:
    """torchvision/open_clip transforms -> JSON-able steps; UnsupportedStep if unknown."""
    import open_clip.transform as oct
    from torchvision import transforms as T

    ResizeKeepRatio = getattr(oct, "ResizeKeepRatio", ())
    CenterCropOrPad = getattr(oct, "CenterCropOrPad", ())
    MaybeConvertMode = getattr(oct, "MaybeConvertMode", ())
    steps: list[dict[str, Any]] = []
    for t in getattr(pil_transform, "transforms", [pil_transform]):
        if isinstance(t, T.Resize):
            if t.max_size is not None:
                raise UnsupportedStep("Resize with max_size")
            size = t.size if isinstance(t.size, int) else list(t.size)
            if isinstance(size, list) and len(size) == 1:
                size = size[0]
            steps.append({"op": "resize", "size": size, "interpolation": t.interpolation.value})
        elif isinstance(t, T.CenterCrop):
            steps.append({"op": "center_crop", "size": _pair(t.size), "fill": 0})
        elif ResizeKeepRatio and isinstance(t, ResizeKeepRatio):
            if t.random_scale_prob or t.random_aspect_prob:
                raise UnsupportedStep("random ResizeKeepRatio")
            steps.append(
                {
                    "op": "resize_keep_ratio",
                    "size": list(t.size),
                    "longest": float(t.longest),
                    "interpolation": t.interpolation.value,
                }
            )
        elif CenterCropOrPad and isinstance(t, CenterCropOrPad):
            fill = t.fill
            steps.append(
                {
                    "op": "center_crop",
                    "size": _pair(t.size),
                    "fill": list(fill) if isinstance(fill, (list, tuple)) else fill,
                }
            )
        elif getattr(t, "__name__", "") == "_convert_to_rgb":
            steps.append({"op": "convert", "mode": "RGB"})
        elif MaybeConvertMode and isinstance(t, MaybeConvertMode):
            steps.append({"op": "convert", "mode": t.mode})
        else:
            raise UnsupportedStep(f"preprocessing step {t!r}")
    for s in steps:
        if "interpolation" in s and s["interpolation"] not in _RESAMPLE:
            raise UnsupportedStep(f"interpolation {s['interpolation']}")
    return steps


def resized_size(w: int, h: int, size) -> tuple[int, int]:
    """(new_w, new_h) of a resize step: an int sets the shorter side, as torchvision computes it."""
    if isinstance(size, int):
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        return (new_short, new_long) if w <= h else (new_long, new_short)
    return int(size[1]), int(size[0])


def keep_ratio_size(w: int, h: int, size, longest: float) -> list[int]:
    """[new_h, new_w] of open_clip's ResizeKeepRatio (no random scale)."""
    rh, rw = h / size[0], w / size[1]
    ratio = max(rh, rw) * longest + min(rh, rw) * (1.0 - longest)
    return [round(h / ratio), round(w / ratio)]


def _resize(img: Image.Image, size, interpolation: str) -> Image.Image:
    new_w, new_h = resized_size(*img.size, size)
    if (new_w, new_h) == img.size:
        return img
    return img.resize((new_w, new_h), _RESAMPLE[interpolation])


def _resize_keep_ratio(img: Image.Image, size, longest: float, interpolation: str) -> Image.Image:
    return _resize(img, keep_ratio_size(*img.size, size, longest), interpolation)


def _center_crop(img: Image.Image, size, fill) -> Image.Image:
    ch, cw = size
    w, h = img.size
    if cw > w or ch > h:
        left, top = (cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0
        right, bottom = (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0
        color = tuple(fill) if isinstance(fill, list) else fill
        if img.mode == "RGB" and isinstance(color, int):
            color = (color,) * 3
        canvas = Image.new(img.mode, (w + left + right, h + top + bottom), color)
        canvas.paste(img, (left, top))
        img = canvas
        w, h = img.size
        if (w, h) == (cw, ch):
            return img
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return img.crop((left, top, left + cw, top + ch))


def apply(steps: list[dict[str, Any]], img: Image.Image) -> Image.Image:
    for s in steps:
        op = s["op"]
        if op == "resize":
            img = _resize(img, s["size"], s["interpolation"])
        elif op == "resize_keep_ratio":
            img = _resize_keep_ratio(img, s["size"], s["longest"], s["interpolation"])
        elif op == "center_crop":
            img = _center_crop(img, s["size"], s["fill"])
        elif op == "convert":
            img = img.convert(s["mode"])
        else:
            raise UnsupportedStep(op)
    return img


def compose(steps: list[dict[str, Any]]) -> Callable[[Image.Image], Image.Image]:
    return functools.partial(apply, steps)  # picklable: decode worker processes receive it
