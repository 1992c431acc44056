"""The OCR stage: read the text in indexed images, after publish, a batch per transaction.

It runs once the vision index is published, so search works before any text is read. It reads the
indexed images whose text was not read by this engine version from their current bytes (new, changed,
or read by an older engine; ``--reocr``: all), newest first, so a run under ``--ocr-budget`` reads the
newest and the next run carries on (a budget too short for the readers to start starts nothing).
``--reocr`` first marks every stored read as pending, in the store, so a run stopped midway leaves the
rest to the next run, ``--reocr`` or not. Each batch of results is one transaction (the keyword rows
follow by trigger): a kill -9 loses only the batch in flight. An image that cannot be read or passes the
time limit is stored with its error (not read again until ``--reocr`` or another engine version) and is
a warning in the job record, never a failed image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from indexer.ocr_pool import OcrPool, ocr_cores
from indexer.ocr_read import engine_id
from indexer.progress import bar
from search.settings import settings
from search.store.database import Store
from search.store.ocr import OcrResult

log = logging.getLogger("glimpse.indexer")

ROWS = 1024  # pending rows listed per round (bounded memory at any corpus size)
BATCH = 16  # results per transaction: what a kill -9 can lose (about 5 s of one core's reading)
# Lines below this confidence stay out of the keyword index (kept with their boxes for the detail page):
# on photos without text the reader's stray "words" score lower (bench/ocr.py, BENCHMARKS.md).
MIN_CONFIDENCE = 0.8
# Under --ocr-budget, the least time worth starting the readers for: each loads three models and reads a
# warm-up image first (a few seconds a core; more on a loaded machine). A budget that leaves less reads
# nothing and pays nothing; the images wait for the next run.
STARTUP_SECONDS = 15.0


@dataclass
class OcrRun:
    """What the stage did, for the job record and the log."""

    read: int = 0
    with_text: int = 0
    failed: int = 0
    seconds: float = 0.0
    left: int = 0  # still pending when a budget stopped it

    def as_job_fields(self) -> dict:
        return {"ocr_read": self.read, "ocr_failed": self.failed, "ocr_seconds": round(self.seconds, 3)}


def cuda_available() -> bool:
    try:
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:  # noqa: BLE001 - no ONNX Runtime build with CUDA: the CPU reads
        return False


def read_texts(
    store: Store,
    *,
    reocr: bool = False,
    budget_minutes: float | None = None,
    warn: Callable[[str], None] = log.warning,
    workers: int | None = None,
    threads: int = 1,
    time_limit: float | None = None,
    job_id: int | None = None,
) -> OcrRun:
    """Read the text of every pending image (see the module's docstring); returns what was done."""
    engine = engine_id()
    run = OcrRun()
    if engine is None:
        warn("text inside images not read: RapidOCR is not installed (pip install rapidocr)")
        return run
    deadline = time.monotonic() + budget_minutes * 60 if budget_minutes is not None else None
    if reocr:  # recorded in the store first: a run stopped midway leaves the rest for the next run
        log.info("reading the text of %d images again (--reocr)", store.forget_ocr_reads())
    total = store.count_ocr_pending(engine)
    if not total:
        return run
    if deadline is not None and deadline - time.monotonic() < STARTUP_SECONDS:
        run.left = total
        warn(
            f"text not read: the {budget_minutes:g}-minute budget leaves less than the readers' start-up "
            f"({STARTUP_SECONDS:g}s); {total} images left for the next run"
        )
        return run
    cuda = cuda_available()
    workers = min(workers or (1 if cuda else ocr_cores()), total)  # no reader starts with nothing to read
    limit = time_limit if time_limit is not None else settings()["GLIMPSE_OCR_TIMEOUT"]
    log.info(
        "reading text in %d images (%s, %d worker%s%s)",
        total,
        engine,
        workers,
        "s" if workers != 1 else "",
        ", CUDA" if cuda else "",
    )
    progress = bar(total, "text")
    started = time.perf_counter()
    paths: dict[int, tuple[str, str | None]] = {}
    batch: list[OcrResult] = []

    def commit() -> None:
        store.set_ocr_results(engine, batch, MIN_CONFIDENCE, job_id=job_id, job_counts=run.as_job_fields())
        progress.update(len(batch))
        batch.clear()

    def tasks() -> Iterator[tuple[int, str]]:
        after = None
        while rows := store.ocr_pending(engine, ROWS, after):
            after = (rows[-1][3], rows[-1][0])
            for image_id, path, real, _mtime, content_hash in rows:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                paths[image_id] = (path, content_hash)
                yield image_id, real or path

    try:
        with OcrPool(workers, limit, threads, cuda) as pool:
            for got in pool.map(tasks(), stop_at=deadline):
                path, content_hash = paths.pop(got.key)
                if got.error is not None:
                    run.failed += 1
                    warn(f"text not read: {path}: {got.error}")
                run.read += 1
                run.with_text += bool(got.lines)
                run.seconds = time.perf_counter() - started
                batch.append(OcrResult(got.key, content_hash, got.lines, got.error))
                if len(batch) >= BATCH:
                    commit()
        run.seconds = time.perf_counter() - started
        if batch:
            commit()
    finally:
        progress.close()
    run.left = total - run.read
    if run.left > 0 and deadline is not None:
        log.info(
            "text reading stopped by its %g-minute budget: %d images left for the next run", budget_minutes, run.left
        )
    log.info(
        "read text in %d images in %.1fs (%.2f img/s, %d with text, %d not read)",
        run.read,
        run.seconds,
        run.read / max(run.seconds, 1e-9),
        run.with_text,
        run.failed,
    )
    return run
