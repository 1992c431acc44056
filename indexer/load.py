"""Decode and preprocess images in worker processes, overlapped with encoding.

Workers return uint8 HWC arrays already resized and cropped (4x smaller than
float arrays through the pipe); scaling and normalisation run batched on the
encoder's side. A file that fails to decode comes back with its error instead
of stopping the run.

No torch here: on CPU, with the model's ONNX bundle cached, ``glimpse index``
runs without importing torch at all (seconds of start-up and exit saved on
every run). The GPU path, whose workers hand raw JPEG bytes to nvJPEG through
shared memory, lives in ``indexer.load_raw``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from indexer.decode import Loaded, LoadedBatch, load_file, worker_setup
from search.errors import GlimpseError

__all__ = [
    "DecodeWorkerDied",
    "Loaded",
    "LoadedBatch",
    "cpu_decode_workers",
    "default_workers",
    "iter_batches",
    "load_file",
]


class DecodeWorkerDied(GlimpseError, RuntimeError):
    """A decode process was killed (out of memory, a signal): the run stops, committed batches stay."""


_worker: dict = {}


def _pool_init(pil_transform: Callable, draft_size: int) -> None:
    worker_setup()
    _worker.update(pil_transform=pil_transform, draft_size=draft_size)


def _load_range(
    start: int, paths: Sequence[str], want_hash: Sequence[bool], pil_transform: Callable, draft_size: int
) -> list[Loaded]:
    return [load_file(start + j, p, pil_transform, draft_size, h) for j, (p, h) in enumerate(zip(paths, want_hash))]


def _load_chunk(start: int, paths: list[str], want_hash: list[bool]) -> list[Loaded]:
    return _load_range(start, paths, want_hash, _worker["pil_transform"], _worker["draft_size"])


def default_workers(gpu: bool = False) -> int:
    """One decode process per core; on CPU at most 8 (the encoder needs the rest), on a GPU
    all cores but one (the main process feeds the GPU)."""
    cores = os.cpu_count() or 2
    return max(1, min(32, cores - 1)) if gpu else max(1, min(8, cores))


# Measured on a 2-core EPYC (BENCHMARKS.md): decoding + preprocessing a photo in draft mode costs
# ~10 CPU-ms; the image tower runs ~56 counted GFLOP/s per core (ViT-B-32: 5.9 GFLOP, 105 CPU-ms).
DECODE_CPU_MS = 10.0
ENCODE_GFLOPS_PER_CORE = 56.0


def cpu_decode_workers(gflops: float | None, cores: int | None = None) -> int:
    """Decode workers for indexing on CPU: enough cores' worth for the decode share of the work,
    no more. Spare workers only contend with the encoder (ViT-B-32 on 2 cores: 17.0-17.2 img/s
    with one worker, 15.6-15.7 with two); a light model needs a worker per core.
    ``gflops`` unknown: one per core."""
    cores = cores or os.cpu_count() or 2
    if not gflops:
        return default_workers()
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
) -> Generator[LoadedBatch, None, None]:
    """Batches of decoded images, in input order, ``batch_size`` at a time.

    ``want_hash[i]``: also return the content hash of ``paths[i]`` (computed in the worker).
    ``raw_jpeg``: JPEGs a GPU can decode come back undecoded (see ``indexer.load_raw``).
    ``workers``: decode processes (0: decode in this process); they start before this returns,
    so a caller can start threads afterwards without forking them. ``pil_transform`` must pickle.
    Close the iterator (or exhaust it) to stop the workers.
    """
    want = list(want_hash) if want_hash is not None else [False] * len(paths)
    if raw_jpeg:
        from indexer.load_raw import iter_raw_batches

        return iter_raw_batches(
            paths, pil_transform, image_size, batch_size, default_workers(True) if workers is None else workers, want
        )
    workers = default_workers() if workers is None else workers
    chunks = ((s, list(paths[s : s + batch_size]), want[s : s + batch_size]) for s in range(0, len(paths), batch_size))
    if not workers:
        return (LoadedBatch(_load_range(*c, pil_transform, image_size)) for c in chunks)
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_pool_init, initargs=(pil_transform, image_size))
    # Four batches queued per worker keep them busy without holding the whole corpus decoded.
    died = (
        "a decode worker process died (out of memory, or killed); "
        "batches committed so far are kept and the next run resumes"
    )
    return _drain(pool, in_order(pool, _load_chunk, chunks, 4 * workers, died))


def in_order(pool: ProcessPoolExecutor, fn: Callable, tasks: Iterator[tuple], ahead: int, died: str) -> Iterator:
    """``fn(*task)`` for each task in ``pool``, results in task order, with ``ahead`` tasks queued (the
    first ones submitted now, so the workers start before this returns). A worker that died (out of memory,
    killed) is ``DecodeWorkerDied(died)``. Shutting the pool down stays the caller's."""
    queue = deque(pool.submit(fn, *t) for t in itertools.islice(tasks, ahead))

    def results() -> Iterator:
        while queue:
            try:
                result = queue.popleft().result()
            except BrokenProcessPool as exc:
                raise DecodeWorkerDied(died) from exc
            nxt = next(tasks, None)
            if nxt is not None:
                queue.append(pool.submit(fn, *nxt))
            yield result

    return results()


def _drain(pool: ProcessPoolExecutor, results: Iterator) -> Generator[LoadedBatch, None, None]:
    try:
        for items in results:
            yield LoadedBatch(items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
