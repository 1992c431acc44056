"""The video stage: the plan's videos read in worker processes, their frames embedded, one commit each.

A video is one task: a worker checks it (``indexer.admit.admit_video``: size cap, container header),
hashes it when the plan did not (``indexer.hashing.video_hash``: size and three 1 MiB blocks), picks
and decodes its frames small (``indexer.video.read_video``, one decoder thread) and preprocesses them
with the encoder's own ``pil_transform``. This process encodes them with the encoder that embeds the
images, drops near-repeats (``dedupe_frames``) and commits the video row, its kept frames and the
job's counts in ONE transaction (``Writer.write_video``): a kill mid-video loses only that video, and
the next run reads it again.

Images keep their own path (``indexer.runner``); a remote runner (Ray) embeds images only, and the
videos of its run are embedded here, on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from indexer.decode import Loaded, worker_setup
from indexer.load import in_order
from indexer.options import Options
from indexer.pixels import batch_pixels
from indexer.plan import ToEmbed
from indexer.progress import bar
from indexer.runner import CPU_BATCH
from indexer.video import dedupe_frames
from indexer.video_read import VideoRead, read_one
from indexer.writer import Writer
from search.settings import settings

if TYPE_CHECKING:
    from search.encoders.protocol import ImageTextEncoder as Encoder

log = logging.getLogger("glimpse.indexer")


_worker: dict = {}


def _pool_init(pil_transform: Callable, short_side: int) -> None:
    worker_setup()
    _worker.update(pil_transform=pil_transform, short_side=short_side)


def _read_in_worker(index: int, path: str, name: str, want_hash: bool) -> VideoRead:
    return read_one(index, path, name, want_hash, _worker["pil_transform"], _worker["short_side"])


def video_workers(opts: Options) -> int:
    """Worker processes reading videos: ``--workers`` (0: read in this process), else half the cores
    (the other half encodes), at most 4."""
    if opts.workers is not None:
        return opts.workers
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class VideoStage:
    """Reads, embeds and writes the videos of one run (see the module's doc)."""

    def __init__(self, writer: Writer, enc: Encoder, opts: Options):
        self.writer = writer
        self.enc = enc
        self.opts = opts
        self.batch_size = opts.batch_size or CPU_BATCH
        self.read_s = 0.0  # worker seconds reading videos
        self.encode_s = 0.0

    def run(self, items: Sequence[ToEmbed]) -> None:
        if not items:
            return
        t_start = time.perf_counter()
        progress = bar(len(items), "videos", unit="video")
        frames_read = frames_kept = 0
        for read in self._reads(items):
            frames = self._embed(read)
            self.writer.write_video(items[read.index], read, frames)
            frames_read += len(read.times)
            frames_kept += len(frames)
            progress.update(1)
        progress.close()
        took = time.perf_counter() - t_start
        log.info(
            "videos: %d read in %.1fs (reading %.1f worker-s, encoding %.1fs); %d frames chosen, %d kept",
            len(items),
            took,
            self.read_s,
            self.encode_s,
            frames_read,
            frames_kept,
        )

    def _reads(self, items: Sequence[ToEmbed]) -> Iterator[VideoRead]:
        """Each video read, in list order; with workers, the next ones are read while this one encodes."""
        tasks = [(i, it.entry.real_path or it.entry.path, it.entry.path, not it.hashed) for i, it in enumerate(items)]
        workers = video_workers(self.opts)
        if not workers:
            for task in tasks:
                read = read_one(*task, self.enc.pil_transform, self.enc.image_size)
                self.read_s += read.seconds
                yield read
            return
        pool = ProcessPoolExecutor(
            max_workers=workers, initializer=_pool_init, initargs=(self.enc.pil_transform, self.enc.image_size)
        )
        died = (
            "a video worker process died (out of memory, or killed); "
            "videos committed so far are kept and the next run resumes"
        )
        with contextlib.ExitStack() as stack:
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            # One video queued per worker beyond the one it reads: at most ~2 x 300 small frames waiting.
            for read in in_order(pool, _read_in_worker, iter(tasks), 2 * workers, died):
                self.read_s += read.seconds
                yield read

    def _embed(self, read: VideoRead) -> list[tuple[float, np.ndarray]]:
        """The frames kept: each chosen frame encoded like an image, then near-repeats dropped."""
        if read.pixels is None or not read.times:
            return []
        t0 = time.perf_counter()
        vectors = []
        for start in range(0, len(read.times), self.batch_size):
            batch = [
                Loaded(start + j, pixels, {}, None)
                for j, pixels in enumerate(read.pixels[start : start + self.batch_size])
            ]
            _, pixels = batch_pixels(batch, self.enc, None)
            vectors.append(np.asarray(self.enc.encode_pixels(pixels), dtype=np.float32))
        v = np.concatenate(vectors)
        self.encode_s += time.perf_counter() - t0
        keep = dedupe_frames(read.times, v, settings()["GLIMPSE_VIDEO_DEDUPE"])
        return [(read.times[i], v[i]) for i in keep]
