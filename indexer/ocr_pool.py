"""OCR worker processes, one image at a time each, with a time limit per image.

One single-threaded worker per core (BENCHMARKS.md: faster than fewer workers with more threads). A
worker that passes the limit on an image is killed and replaced, and that image comes back as a
timeout; a worker that dies (out of memory) likewise comes back as an error: neither stops the run.
Workers are spawned, not forked: the indexer holds ONNX Runtime and torch threads by then.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from search.store.ocr import TextLine

# Seconds a worker may take to start (imports, model load, a warm-up read) before the run gives up on it.
START_TIMEOUT = 300.0


@dataclass
class Read:
    """One image's outcome: its lines, or why there are none (``error``; ``timed_out`` for the limit)."""

    key: Any
    lines: list[TextLine]
    error: str | None = None
    timed_out: bool = False


def ocr_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _serve(conn: Connection, threads: int, cuda: bool) -> None:
    """A worker: build the reader, warm it up, then read paths until told to stop (None)."""
    from PIL import Image, ImageDraw, ImageFont

    from indexer.decode import worker_setup
    from indexer.ocr_read import TextReader

    worker_setup()
    reader = TextReader(threads, cuda)
    warm = Image.new("RGB", (160, 48), "white")
    ImageDraw.Draw(warm).text((8, 8), "ready", fill="black", font=ImageFont.load_default(size=24))
    reader.read_image(warm)  # loads all three models before any image's clock runs
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        key, path = msg
        try:
            conn.send((key, reader.read(path), None))
        except Exception as exc:  # noqa: BLE001 - any failure is this image's, reported, never the run's
            conn.send((key, [], f"{exc.__class__.__name__}: {exc}"[:500]))


class _Worker:
    def __init__(self, ctx, threads: int, cuda: bool):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, threads, cuda), daemon=True, name="glimpse-ocr")
        self.proc.start()
        child.close()
        self.ready = False
        self.task: tuple[Any, str] | None = None
        self.deadline = time.monotonic() + START_TIMEOUT

    def send(self, task: tuple[Any, str], limit: float) -> None:
        self.task = task
        self.deadline = time.monotonic() + limit
        self.conn.send(task)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class OcrPool:
    """``workers`` processes of ``threads`` ONNX Runtime threads each; :meth:`map` reads ``(key, path)`` pairs."""

    def __init__(self, workers: int, time_limit: float, threads: int = 1, cuda: bool = False):
        self.size = max(1, workers)
        self.time_limit = time_limit
        self.threads = threads
        self.cuda = cuda
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []

    def __enter__(self) -> OcrPool:
        self._workers = [_Worker(self._ctx, self.threads, self.cuda) for _ in range(self.size)]
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                if w.proc.is_alive() and w.task is None and w.ready:
                    w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.proc.join(2)
            w.kill()
        self._workers = []

    def map(self, tasks: Iterable[tuple[Any, str]], stop_at: float | None = None) -> Iterator[Read]:
        """Results in the order they finish. Stop iterating to stop: images in flight are dropped.
        ``stop_at`` (a ``time.monotonic()`` time): past it, with no image in flight, it returns at once,
        not waiting for workers still starting (``tasks`` itself stops handing out images then)."""
        todo = iter(tasks)
        exhausted = False

        def next_task() -> tuple[Any, str] | None:
            nonlocal exhausted
            task = None if exhausted else next(todo, None)
            exhausted = task is None
            return task

        while True:
            for w in self._workers:
                if w.ready and w.task is None:
                    task = next_task()
                    if task is not None:
                        w.send(task, self.time_limit)
            busy = [w for w in self._workers if w.task is not None or not w.ready]
            if exhausted and all(w.task is None for w in self._workers):
                return
            if not busy:  # every worker idle and nothing more to do
                return
            if stop_at is not None and time.monotonic() >= stop_at and all(w.task is None for w in self._workers):
                return  # out of time with nothing in flight: workers still starting are not waited for
            now = time.monotonic()
            wake = min(w.deadline for w in busy)
            if stop_at is not None and stop_at > now:  # wake at it too, in case workers are still starting
                wake = min(wake, stop_at)
            timeout = max(0.0, wake - now)
            ready = set(wait([w.conn for w in busy], timeout))
            now = time.monotonic()
            for i, w in enumerate(self._workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):  # it died: out of memory, a signal
                        task = w.task
                        self._replace(i)
                        if task is None:
                            raise RuntimeError("an OCR worker died while starting") from None
                        yield Read(task[0], [], "the OCR worker died reading it (out of memory?)")
                        continue
                    if msg == "ready":
                        w.ready = True
                        continue
                    key, lines, error = msg
                    w.task = None
                    yield Read(key, lines, error)
                elif now >= w.deadline:
                    task = w.task
                    self._replace(i)
                    if task is None:
                        raise RuntimeError(f"an OCR worker did not start within {START_TIMEOUT:.0f}s")
                    yield Read(task[0], [], f"no text read within the {self.time_limit:g}s limit", timed_out=True)

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self._ctx, self.threads, self.cuda)
