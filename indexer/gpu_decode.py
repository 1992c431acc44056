"""JPEG decode and preprocessing on the GPU (nvJPEG through torchvision) for `glimpse index`.

On a GPU the image tower outruns CPU decode workers by an order of magnitude, so
there the workers only read, hash and probe each JPEG; a batch's bytes travel to
the main process as one shared-memory tensor, nvJPEG decodes them on the device,
and open_clip's resize/crop (``search.encoders.pil_steps``) is replayed there with
antialiased interpolation. Whatever nvJPEG should not take (other formats, CMYK,
progressive or truncated JPEGs, over the pixel limit) is decoded by PIL in the
worker as before, and an image nvJPEG refuses after all is retried with PIL.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from search.encoders.pil_steps import keep_ratio_size, resized_size
from search.media.decode import max_image_pixels

_INTERP = {"bicubic": "bicubic", "bilinear": "bilinear"}

# torchvision >= 0.29 flags its image codecs deprecated (in favour of torchcodec) on every call.
# A filter set once, not catch_warnings(), which is not thread-safe (two encode threads decode).
warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io.image")


def gpu_jpeg_available(device: str) -> bool:
    """True when torchvision can decode JPEGs on ``device`` with nvJPEG."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401

        return hasattr(torch.ops.image, "decode_jpegs_cuda")
    except Exception:  # noqa: BLE001 - a torchvision build without image ops
        return False


def replayable(steps: Sequence[dict[str, Any]]) -> bool:
    """Whether ``steps`` (search.encoders.pil_steps.describe) can run on tensors here."""
    for s in steps:
        if s["op"] in ("resize", "resize_keep_ratio"):
            if s["interpolation"] not in _INTERP:
                return False
        elif s["op"] == "convert":
            if s["mode"] != "RGB":
                return False
        elif s["op"] != "center_crop":
            return False
    return True


def nvjpeg_suitable(data: bytes, meta: dict) -> bool:
    """Cheap checks on bytes the worker already holds: a complete baseline RGB/grey JPEG.

    A file without its end-of-image marker is most likely truncated: PIL then
    raises a clear error, where a GPU decoder might return a half-grey picture.
    """
    if meta.get("format") != "JPEG" or meta.get("mode") not in ("RGB", "L") or meta.get("progressive"):
        return False
    if (meta.get("width") or 0) * (meta.get("height") or 0) > max_image_pixels():
        return False
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


def orient(x: torch.Tensor, orientation: int | None) -> torch.Tensor:
    """EXIF orientation on a CHW tensor, as PIL's ImageOps.exif_transpose does it."""
    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-1, -2)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:  # PIL TRANSPOSE
        return x.transpose(-1, -2)
    if orientation == 6:  # PIL ROTATE_270 (clockwise)
        return torch.rot90(x, -1, dims=(-2, -1))
    if orientation == 7:  # PIL TRANSVERSE
        return torch.rot90(x, 2, dims=(-2, -1)).transpose(-1, -2)
    if orientation == 8:  # PIL ROTATE_90 (counter-clockwise)
        return torch.rot90(x, 1, dims=(-2, -1))
    return x


def _resize(x: torch.Tensor, size, interpolation: str) -> torch.Tensor:
    """x: NCHW float."""
    h, w = x.shape[-2:]
    new_w, new_h = resized_size(w, h, size)
    if (new_h, new_w) == (h, w):
        return x
    return F.interpolate(x, size=(new_h, new_w), mode=_INTERP[interpolation], align_corners=False, antialias=True)


def _center_crop(x: torch.Tensor, size, fill) -> torch.Tensor:
    ch, cw = size
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        left, top = (cw - w) // 2 if cw > w else 0, (ch - h) // 2 if ch > h else 0
        right, bottom = (cw - w + 1) // 2 if cw > w else 0, (ch - h + 1) // 2 if ch > h else 0
        value = float(fill if not isinstance(fill, (list, tuple)) else fill[0])
        x = F.pad(x, (left, right, top, bottom), value=value)
        h, w = x.shape[-2:]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


def preprocess(x: torch.Tensor, steps: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Decoded uint8 CHW image (or NCHW images of one size) -> uint8 HWC (NHWC) input of the
    image tower, on x's device."""
    if x.dim() == 3:
        return preprocess(x[None], steps)[0]
    y = x.float()
    for s in steps:
        op = s["op"]
        if op == "resize":
            y = _resize(y, s["size"], s["interpolation"])
        elif op == "resize_keep_ratio":
            h, w = y.shape[-2:]
            y = _resize(y, keep_ratio_size(w, h, s["size"], s["longest"]), s["interpolation"])
        elif op == "center_crop":
            y = _center_crop(y, s["size"], s["fill"])
    # PIL rounds each resampled pixel to uint8: so do we, so both paths feed the same kind of input.
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def decode_batch(
    datas: Sequence[torch.Tensor], orientations: Sequence[int | None], steps, device: str
) -> list[torch.Tensor | Exception]:
    """Decode JPEG byte tensors (CPU, 1-D uint8) on ``device``; per image a HWC uint8 tensor or the error.

    One batched nvJPEG call; if it fails (one bad file fails them all), each image is retried alone.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    def run(items):
        return decode_jpeg(list(items), mode=ImageReadMode.RGB, device=device)

    try:
        decoded: list = list(run(datas))
    except Exception:  # noqa: BLE001 - find the culprit(s) one by one
        decoded = []
        for d in datas:
            try:
                decoded.append(run([d])[0])
            except Exception as exc:  # noqa: BLE001
                decoded.append(exc)
    # Photos from one camera share a size: one resize call per (size, orientation) group instead of
    # one per image keeps the Python work per batch small next to the GPU's.
    groups: dict[tuple, list[int]] = {}
    for i, (img, o) in enumerate(zip(decoded, orientations)):
        if not isinstance(img, Exception):
            groups.setdefault((tuple(img.shape), o), []).append(i)
    out: list[torch.Tensor | Exception] = list(decoded)
    for (_, o), idx in groups.items():
        x = decoded[idx[0]][None] if len(idx) == 1 else torch.stack([decoded[i] for i in idx])
        for i, y in zip(idx, preprocess(orient(x, o), steps)):
            out[i] = y
    return out
