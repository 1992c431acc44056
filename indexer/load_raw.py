"""The GPU path's loader: workers read, hash and probe JPEGs and hand their bytes over raw.

nvJPEG then decodes them on the device (``indexer.gpu_decode``). A batch's bytes
cross from the worker as one shared-memory tensor, which is why this path keeps
torch's DataLoader; files nvJPEG should not take are decoded by PIL in the
worker as on the CPU path (``indexer.decode.load_file``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from indexer.decode import Loaded, LoadedBatch, load_file, worker_setup


class _RawFiles(Dataset):
    def __init__(self, paths: Sequence[str], pil_transform: Callable, draft_size: int, want_hash: Sequence[bool]):
        self.paths = list(paths)
        self.pil_transform = pil_transform
        self.draft_size = draft_size
        self.want_hash = list(want_hash)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Loaded:
        item = load_file(i, self.paths[i], self.pil_transform, self.draft_size, self.want_hash[i], raw_jpeg=True)
        if item.pixels is not None:  # a tensor crosses to the main process in shared memory
            item.pixels = torch.from_numpy(item.pixels)
        return item


def _collate(items: list[Loaded]) -> LoadedBatch:
    batch = LoadedBatch(items)
    raw = [it for it in items if it.jpeg is not None]
    if raw:
        offset, parts = 0, []
        for it in raw:
            data: bytes = it.jpeg
            parts.append(data)
            it.jpeg = (offset, offset + len(data))
            offset += len(data)
        batch.blob = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding is single-threaded per image; extra torch threads only contend
    worker_setup()


def iter_raw_batches(
    paths: Sequence[str],
    pil_transform: Callable,
    image_size: int,
    batch_size: int,
    workers: int,
    want_hash: Sequence[bool],
) -> Generator[LoadedBatch, None, None]:
    loader = DataLoader(
        _RawFiles(paths, pil_transform, image_size, want_hash),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        # Raw JPEG batches are large (~100 MB at 256 photos): two per worker keep the GPU fed.
        prefetch_factor=2 if workers else None,
        pin_memory=False,  # our items are dataclasses; the encoder pins the stacked batch
    )
    yield from loader
