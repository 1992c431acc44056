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

from indexer.hashing import bytes_hash, file_hash
from search.encoder import pil_to_uint8
from search.images import ImageDecodeError, load_rgb, probe


@dataclass
class Loaded:
    index: int  # position in the input list
    pixels: torch.Tensor | None
    meta: dict
    error: str | None
    content_hash: str | None = None  # only when asked for: the worker already holds the bytes


# Files up to this size are read once into memory, hashed and decoded from there;
# bigger ones are hashed in a streaming pass and decoded from disk.
_IN_MEMORY_MAX = 64 << 20


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], pil_transform: Callable, draft_size: int,
                 want_hash: Sequence[bool] | None = None):
        self.paths = list(paths)
        self.pil_transform = pil_transform
        self.draft_size = draft_size
        self.want_hash = list(want_hash) if want_hash is not None else [False] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Loaded:
        path = self.paths[i]
        digest = None
        try:
            source: str | bytes = path
            if self.want_hash[i]:
                # Hashing here, on bytes read for decoding anyway, keeps it off the encoder's thread.
                if os.path.getsize(path) <= _IN_MEMORY_MAX:
                    with open(path, "rb") as f:
                        source = f.read()
                    digest = bytes_hash(source)
                else:
                    digest = file_hash(path)
            img = load_rgb(source, draft_size=self.draft_size)
            meta = probe(source)
            return Loaded(i, pil_to_uint8(self.pil_transform(img)), meta, None, digest)
        except ImageDecodeError as exc:
            return Loaded(i, None, {}, str(exc), digest)
        except Exception as exc:  # noqa: BLE001 - any bad file must not stop the run
            if isinstance(exc, FileNotFoundError):
                return Loaded(i, None, {}, "file vanished during indexing")
            return Loaded(i, None, {}, f"cannot decode image: {exc.__class__.__name__}: {exc}", digest)


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
    want_hash: Sequence[bool] | None = None,
) -> Iterator[list[Loaded]]:
    """Yield lists of decoded images, in input order, ``batch_size`` at a time.

    ``want_hash[i]``: also return the content hash of ``paths[i]`` (computed in the worker).
    """
    workers = default_workers() if workers is None else workers
    dataset = _ImageFiles(paths, pil_transform, draft_size=image_size, want_hash=want_hash)
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
