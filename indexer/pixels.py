"""Decoded batches as encoder input: where JPEGs are decoded (workers or nvJPEG) and how batches
become one array or tensor on the encoder's device."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from search.errors import InvalidValue
from search.settings import settings

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")


def raw_batch_workers(workers: int, batch_size: int, sizes: Sequence[int]) -> int:
    """Fewer raw-mode workers when files are big: 15 workers x 2 prefetched batches of 256
    12 MP photos would be 30 GB of JPEG bytes waiting. Raw JPEG batches in flight (workers x prefetch 2)
    hold whole files in memory: at most GLIMPSE_RAW_INFLIGHT_MB, else a quarter of RAM, at most 8 GiB."""
    budget = (settings()["GLIMPSE_RAW_INFLIGHT_MB"] or 0) << 20
    if not budget:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError):
            ram = 16 << 30
        budget = min(8 << 30, ram // 4)
    mean = sum(sizes) / len(sizes) if sizes else 0
    per_worker = 2 * batch_size * max(mean, 1)
    return max(1, min(workers, int(budget // per_worker)))


def decode_mode(option: str | None) -> str:
    """--decode, else GLIMPSE_DECODE, else auto; anything else is refused."""
    decode = (option or settings()["GLIMPSE_DECODE"]).lower()
    if decode not in ("auto", "gpu", "cpu"):
        raise InvalidValue(f"unknown decode mode {decode!r}: use auto, gpu or cpu")
    return decode


def gpu_decode_steps(enc: Encoder, decode: str | None) -> list | None:
    """The preprocessing steps to replay on the GPU after nvJPEG, or None to decode in workers.

    ``decode``: "auto" (default; GLIMPSE_DECODE) decodes on the GPU when the encoder runs on
    one and torchvision has nvJPEG; "gpu" insists; "cpu" keeps PIL in the workers.
    """
    decode = decode_mode(decode)
    if decode == "cpu" or (decode == "auto" and not enc.device.startswith("cuda")):
        return None
    from indexer.gpu_decode import gpu_jpeg_available, replayable  # torch
    from search.encoders.pil_steps import UnsupportedStep, describe

    why = None
    if not gpu_jpeg_available(enc.device):
        why = f"no nvJPEG decoder for device {enc.device}"
    else:
        try:
            steps = describe(enc.pil_transform)
            if replayable(steps):
                return steps
            why = "the model's preprocessing has a step the GPU path cannot replay"
        except UnsupportedStep as exc:
            why = str(exc)
    if decode == "gpu":
        raise InvalidValue(f"--decode gpu: {why}")
    log.info("decoding on CPU: %s", why)
    return None


def batch_pixels(batch, enc: Encoder, gpu_steps: list | None):
    """The images of a batch that decoded, and their uint8 NHWC pixels (on the encoder's device
    when it is a GPU). JPEGs left raw by the workers are decoded here with nvJPEG; one nvJPEG
    refuses is decoded with PIL instead, or marked failed with PIL's error."""
    raw = [b for b in batch if b.jpeg is not None]
    if not raw and not enc.device.startswith("cuda"):  # the CPU path: no torch needed
        ok = [b for b in batch if b.pixels is not None]
        return ok, (np.stack([np.asarray(b.pixels) for b in ok]) if ok else None)
    import torch

    from indexer.gpu_decode import decode_batch
    from search.encoders.torch_clip import pil_to_uint8
    from search.media.decode import ImageDecodeError, load_rgb

    on_device: dict[int, torch.Tensor] = {}
    if raw:
        blob = batch.blob
        datas = [blob[b.jpeg[0] : b.jpeg[1]] for b in raw]
        results = decode_batch(datas, [b.meta.get("orientation") for b in raw], gpu_steps, enc.device)
        for b, data, got in zip(raw, datas, results):
            if isinstance(got, Exception):
                try:
                    b.pixels = pil_to_uint8(enc.pil_transform(load_rgb(data.numpy().tobytes(), enc.image_size)))
                except ImageDecodeError as exc:
                    b.error = str(exc)
            else:
                on_device[b.index] = got
            b.jpeg = None
    ok = [b for b in batch if b.pixels is not None or b.index in on_device]
    if not ok:
        return ok, None
    host = [torch.as_tensor(b.pixels) for b in ok if b.index not in on_device]
    if host:
        stacked = torch.stack(host)
        if enc.device.startswith("cuda"):  # pinned: the copy to the GPU overlaps instead of blocking
            stacked = stacked.pin_memory().to(enc.device, non_blocking=True)
        if not on_device:
            return ok, stacked
    moved = iter(stacked if host else ())
    return ok, torch.stack([on_device[b.index] if b.index in on_device else next(moved) for b in ok])


def check_decode_option(decode: str | None, device: str | None) -> None:
    """Refuse `--decode gpu` before scanning when no GPU decoder can run (a mistake in a cron line
    should fail in a second, not after the scan and the model load)."""
    if decode_mode(decode) == "gpu":
        from indexer.gpu_decode import gpu_jpeg_available
        from search.encoders.torch_clip import pick_device

        device = pick_device(device)
        if not gpu_jpeg_available(device):
            raise InvalidValue(
                f"--decode gpu: no nvJPEG decoder for device {device} "
                "(needs a CUDA GPU and torchvision built with nvJPEG)"
            )
