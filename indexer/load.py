"""Decode and preprocess images in worker processes, overlapped with encoding.

Workers return uint8 HWC tensors already resized and cropped (4x smaller than
float tensors through the pipe); scaling and normalisation run batched on the
encoder's device. A file that fails to decode comes back with its error
instead of stopping the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from search.encoder import pil_to_uint8
from search.images import ImageDecodeError, load_rgb, probe


@dataclass
class Loaded:
    index: int  # position in the input list
    pixels: torch.Tensor | None
    meta: dict
    error: str | None


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], pil_transform: Callable, draft_size: int):
        self.paths = list(paths)
        self.pil_transform = pil_transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Loaded:
        path = self.paths[i]
        try:
            img = load_rgb(path, draft_size=self.draft_size)
            meta = probe(path)
            return Loaded(i, pil_to_uint8(self.pil_transform(img)), meta, None)
        except ImageDecodeError as exc:
            return Loaded(i, None, {}, str(exc))
        except Exception as exc:  # noqa: BLE001 - any bad file must not stop the run
            if isinstance(exc, FileNotFoundError):
                return Loaded(i, None, {}, "file vanished during indexing")
            return Loaded(i, None, {}, f"cannot decode image: {exc.__class__.__name__}: {exc}")


def _collate(items: list[Loaded]) -> list[Loaded]:
    return items


# Decode workers run at a lower CPU priority than the encoder: on a machine with
# few cores they then fill the encoder's idle moments instead of preempting its
# threads mid-matmul (a stalled thread holds up every other one at the next barrier).
DECODE_NICE = int(os.environ.get("GLIMPSE_DECODE_NICE", "0"))


def _worker_init(_worker_id: int) -> None:
    # Decoding is single-threaded per image; extra torch threads only contend.
    torch.set_num_threads(1)
    if DECODE_NICE:
        try:
            os.nice(DECODE_NICE)
        except OSError:
            pass


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2)))


def iter_batches(
    paths: Sequence[str],
    pil_transform: Callable,
    image_size: int,
    batch_size: int = 32,
    workers: int | None = None,
    pin_memory: bool = False,
) -> Iterator[list[Loaded]]:
    """Yield lists of decoded images, in input order, ``batch_size`` at a time."""
    workers = default_workers() if workers is None else workers
    dataset = _ImageFiles(paths, pil_transform, draft_size=image_size)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        pin_memory=False,  # our items are dataclasses; pinning happens on the stacked batch
    )
    for batch in loader:
        if pin_memory:
            for item in batch:
                if item.pixels is not None:
                    item.pixels = item.pixels.pin_memory()
        yield batch
