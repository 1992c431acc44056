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

from indexer.gpu_decode import nvjpeg_suitable
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
    jpeg: tuple[int, int] | None = None  # raw mode: [start, end) of this file's bytes in the batch's blob


class LoadedBatch(list):
    """A batch of Loaded; ``blob`` holds the raw JPEG bytes of its ``jpeg`` items (one tensor per batch,
    so a batch crosses from the worker in one shared-memory segment)."""

    blob: torch.Tensor | None = None


# Files up to this size are read once into memory, hashed and decoded from there;
# bigger ones are hashed in a streaming pass and decoded from disk.
_IN_MEMORY_MAX = 64 << 20


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], pil_transform: Callable, draft_size: int,
                 want_hash: Sequence[bool] | None = None, raw_jpeg: bool = False):
        self.paths = list(paths)
        self.pil_transform = pil_transform
        self.draft_size = draft_size
        self.want_hash = list(want_hash) if want_hash is not None else [False] * len(self.paths)
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Loaded:
        path = self.paths[i]
        digest = meta = None
        try:
            source: str | bytes = path
            if self.raw_jpeg and os.path.getsize(path) <= _IN_MEMORY_MAX:
                with open(path, "rb") as f:
                    source = f.read()
                if self.want_hash[i]:
                    digest = bytes_hash(source)
                try:
                    meta = probe(source)
                except Exception:  # noqa: BLE001 - load_rgb below says what is wrong with it
                    meta = {}
                if nvjpeg_suitable(source, meta):
                    return Loaded(i, None, meta, None, digest, jpeg=source)  # type: ignore[arg-type] # packed by _collate
            elif self.want_hash[i]:
                # Hashing here, on bytes read for decoding anyway, keeps it off the encoder's thread.
                if os.path.getsize(path) <= _IN_MEMORY_MAX:
                    with open(path, "rb") as f:
                        source = f.read()
                    digest = bytes_hash(source)
                else:
                    digest = file_hash(path)
            img = load_rgb(source, draft_size=self.draft_size)
            if not meta:  # the raw path above has probed it already
                meta = probe(source)
            return Loaded(i, pil_to_uint8(self.pil_transform(img)), meta, None, digest)
        except ImageDecodeError as exc:
            return Loaded(i, None, {}, str(exc), digest)
        except Exception as exc:  # noqa: BLE001 - any bad file must not stop the run
            if isinstance(exc, FileNotFoundError):
                return Loaded(i, None, {}, "file vanished during indexing")
            return Loaded(i, None, {}, f"cannot decode image: {exc.__class__.__name__}: {exc}", digest)


def _collate(items: list[Loaded]) -> LoadedBatch:
    batch = LoadedBatch(items)
    raw = [it for it in items if it.jpeg is not None]
    if raw:
        offset, parts = 0, []
        for it in raw:
            data: bytes = it.jpeg  # type: ignore[assignment]
            parts.append(data)
            it.jpeg = (offset, offset + len(data))
            offset += len(data)
        batch.blob = torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)
    return batch


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


def default_workers(gpu: bool = False) -> int:
    """One decode process per core; on CPU at most 8 (the encoder needs the rest), on a GPU
    all cores but one (the main process feeds the GPU)."""
    cores = os.cpu_count() or 2
    return max(1, min(32, cores - 1)) if gpu else max(1, min(8, cores))


# Measured on a 2-core EPYC (BENCHMARKS.md): decoding + preprocessing a photo in draft mode costs
# ~10 CPU-ms; the image tower runs ~56 counted GFLOP/s per core (ViT-B-32: 5.9 GFLOP, 105 CPU-ms).
DECODE_CPU_MS = 10.0
ENCODE_GFLOPS_PER_CORE = 56.0


def cpu_decode_workers(gflops: float, cores: int | None = None) -> int:
    """Decode workers for indexing on CPU: enough cores' worth for the decode share of the work,
    no more. Spare workers only contend with the encoder (ViT-B-32 on 2 cores: 17.0-17.2 img/s
    with one worker, 15.6-15.7 with two); a light model needs a worker per core."""
    import math

    cores = cores or os.cpu_count() or 2
    encode_ms = 1000.0 * gflops / ENCODE_GFLOPS_PER_CORE
    share = DECODE_CPU_MS / (DECODE_CPU_MS + encode_ms)
    return max(1, min(8, cores, math.ceil(cores * share)))


def iter_batches(
    paths: Sequence[str],
    pil_transform: Callable,
    image_size: int,
    batch_size: int = 32,
    workers: int | None = None,
    want_hash: Sequence[bool] | None = None,
    raw_jpeg: bool = False,
) -> Iterator[LoadedBatch]:
    """Yield batches of decoded images, in input order, ``batch_size`` at a time.

    ``want_hash[i]``: also return the content hash of ``paths[i]`` (computed in the worker).
    ``raw_jpeg``: JPEGs a GPU can decode come back undecoded (``Loaded.jpeg``, see indexer.gpu_decode).
    """
    workers = default_workers(raw_jpeg) if workers is None else workers
    dataset = _ImageFiles(paths, pil_transform, draft_size=image_size, want_hash=want_hash, raw_jpeg=raw_jpeg)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if workers else None,
        # Raw JPEG batches are large (~100 MB at 256 photos): two per worker keep the GPU fed.
        prefetch_factor=(2 if raw_jpeg else 4) if workers else None,
        pin_memory=False,  # our items are dataclasses; the encoder pins the stacked batch
    )
    yield from loader
