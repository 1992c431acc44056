"""The embed stage's seam: an :class:`EmbedRunner` turns files into vectors, batch by batch.

:class:`LocalRunner` is this machine: decode worker processes (or nvJPEG on a GPU) feeding
encode streams. Another runner (Ray, a cluster) is one new class with the same ``run``: the
plan, the writer and publish do not change.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from indexer.decode import Loaded
from indexer.options import Options
from indexer.pixels import batch_pixels, gpu_decode_steps, raw_batch_workers
from search.encoders.ort_session import cpu_threads, runtime_setting
from search.settings import settings

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")


class EmbedRequest(NamedTuple):
    """One file to embed: read it at ``path``; ``want_hash``: also return its content hash
    (the reader holds its bytes anyway; the plan hashed it already when False)."""

    path: str
    size: int
    want_hash: bool


@dataclass
class EmbeddedBatch:
    """A runner's answer for some requests: one :class:`Loaded` per request in ``items``
    (``index`` = position in the request list; ``meta``, ``error``, ``content_hash``), and
    ``vectors[i]`` for ``ok[i]``, the items that decoded."""

    items: Sequence[Loaded]
    ok: Sequence[Loaded]
    vectors: np.ndarray


class EmbedRunner(Protocol):
    def run(self, requests: Sequence[EmbedRequest]) -> Generator[EmbeddedBatch, None, None]:
        """Embed every request, yielding batches in request order (the writer commits them as they
        come, so a crash keeps every batch already yielded). Closing the iterator stops the work."""
        ...

    def busy(self) -> dict[str, float]:
        """Seconds spent per stage (summed over threads), for the run's summary line."""
        ...

    # Optional, looked up by the indexer: ``prepare(encoder)`` before ``run`` (the model the
    # driver opened, for a runner that ships it to other machines), and ``warnings() -> list[str]``
    # after it (lines for the job record, e.g. worker restarts).


# CPU: each encode stream runs its own single-threaded batch. 16 beats 32 on a 2-core EPYC
# (ViT-B-32 ONNX, 2 streams: 18.8 vs 18.4 img/s encoder-only; the last batch also leaves
# one core idle for half as long), and 8 gained no more end to end (BENCHMARKS.md).
CPU_BATCH = 16


def encode_streams(device: str | None) -> int:
    """Concurrent encoder calls while indexing: GLIMPSE_ENCODE_STREAMS, else one per core on CPU."""
    configured = settings()["GLIMPSE_ENCODE_STREAMS"]
    if configured:
        return configured
    if (device and device not in ("cpu", "auto")) or runtime_setting() == "torch":
        return 1
    return min(4, cpu_threads())


class LocalRunner:
    """Decode (worker processes) -> encode (one stream per core on CPU), overlapped.

    On CPU each encode stream is one single-threaded ONNX Runtime call on its own
    batch: no thread barriers inside a batch, so a decode worker taking a core
    stalls one stream instead of both threads of a shared call. Batches come out in
    input order while the encoders work on the next ones.
    """

    def __init__(self, enc: Encoder, opts: Options):
        self.enc = enc
        self.opts = opts
        self.on_gpu = enc.device.startswith("cuda")
        self.batch_size = opts.batch_size or (256 if self.on_gpu else CPU_BATCH)
        # GPU: three batches in flight, so nvJPEG decodes, the model encodes and the host prepares
        # side by side (H100, 1024x768 JPEGs: 3,082 img/s with two, 3,458 with three; BENCHMARKS.md).
        self.streams = (
            encode_streams(opts.device) if enc.device == "cpu" else (settings()["GLIMPSE_ENCODE_STREAMS"] or 3)
        )
        self.gpu_steps = gpu_decode_steps(enc, opts.decode)
        self._busy = {"wait": 0.0, "decode": 0.0, "encode": 0.0}  # seconds, summed over threads
        self._busy_lock = threading.Lock()

    def busy(self) -> dict[str, float]:
        return {
            "waiting for decoded batches": self._busy["wait"],
            "nvJPEG decode" if self.gpu_steps is not None else "stacking": self._busy["decode"],
            "encoder": self._busy["encode"],
        }

    def _add_busy(self, stage: str, seconds: float) -> None:
        with self._busy_lock:
            self._busy[stage] += seconds

    def _encode(self, batch) -> EmbeddedBatch:
        enc = self.enc
        t0 = time.perf_counter()
        ok, pixels = batch_pixels(batch, enc, self.gpu_steps)
        t1 = time.perf_counter()
        vectors = enc.encode_pixels(pixels) if ok else np.zeros((0, enc.dim))
        self._add_busy("decode", t1 - t0)
        self._add_busy("encode", time.perf_counter() - t1)
        return EmbeddedBatch(batch, ok, vectors)

    def _workers(self, sizes: Sequence[int]) -> int:
        from indexer.load import cpu_decode_workers, default_workers

        if self.opts.workers is not None:
            return self.opts.workers
        if self.enc.device == "cpu":
            workers = cpu_decode_workers(self.enc.image_gflops())
        else:
            workers = default_workers(self.on_gpu)
        if self.gpu_steps is not None:
            workers = raw_batch_workers(workers, self.batch_size, sizes)
        return workers

    def run(self, requests: Sequence[EmbedRequest]) -> Generator[EmbeddedBatch, None, None]:
        from indexer.load import iter_batches

        enc, batch_size = self.enc, self.batch_size
        log.info("decoding JPEGs %s", "on the GPU (nvJPEG)" if self.gpu_steps is not None else "in worker processes")
        inflight: deque = deque()  # futures of EmbeddedBatch, in input order
        with (
            ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix="glimpse-encode") as encoders,
            contextlib.ExitStack() as stack,
        ):
            try:
                workers = self._workers([r.size for r in requests])
                log.info("%d decode worker process(es)", workers)
                batches = stack.enter_context(
                    contextlib.closing(
                        iter_batches(
                            [r.path for r in requests],
                            enc.pil_transform,
                            enc.image_size,
                            batch_size,
                            workers,
                            want_hash=[r.want_hash for r in requests],
                            raw_jpeg=self.gpu_steps is not None,
                        )
                    )
                )
                if len(requests) >= batch_size:  # the ONNX session opens while the (already started) workers decode
                    threading.Thread(target=enc.start_batch_runtime, name="glimpse-ort-start", daemon=True).start()
                while True:
                    t0 = time.perf_counter()
                    batch = next(batches, None)
                    self._add_busy("wait", time.perf_counter() - t0)
                    if batch is None:
                        break
                    inflight.append(encoders.submit(self._encode, batch))
                    while len(inflight) >= self.streams:
                        yield inflight.popleft().result()
                while inflight:
                    yield inflight.popleft().result()
            except BaseException:
                # Batches still encoding are dropped (the next run embeds them).
                for fut in inflight:
                    fut.cancel()
                raise
