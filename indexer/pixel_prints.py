"""The pixel-print backfill: images indexed before prints existed (or decoded on the GPU path) get theirs.

A new or changed image gets its print from the decode that embeds it (``indexer.decode.load_file``);
this stage, after publish, reads the rest through the same decode workers (a JPEG in draft mode, so a
12 MP photo costs a few milliseconds), a batch per transaction: an interrupted run keeps what it
stored and the next one carries on. A file that no longer decodes keeps no print and is retried next
run; the duplicate finder leaves images without a print out of its groups.
"""

from __future__ import annotations

import logging

from PIL import Image

from indexer.load import iter_batches
from indexer.progress import bar
from search.media.pixel_print import PRINT_DRAFT
from search.store.database import Store

log = logging.getLogger("glimpse.indexer")
ROWS = 4096  # rows listed per round (bounded memory at any corpus size)
BATCH = 128  # images per transaction


def _nothing(img: Image.Image) -> Image.Image:
    """No model input is needed: a 1x1 image crosses back from the worker instead."""
    return img.resize((1, 1))


def backfill_pixel_prints(store: Store, workers: int | None = None) -> int:
    """Store a pixel print for every indexed image without one; returns how many were stored."""
    total = store.count_without_print()
    if not total:
        return 0
    log.info("pixel prints for %d images indexed without one (the duplicate finder's check)", total)
    progress = bar(total, "pixel prints")
    stored, after = 0, 0
    try:
        while rows := store.without_print(after, ROWS):
            after = rows[-1][0]
            paths = [real or path for _, path, real in rows]
            for batch in iter_batches(paths, _nothing, PRINT_DRAFT, BATCH, workers):
                prints = [
                    (rows[b.index][0], bytes.fromhex(b.meta["pixel_print"]))
                    for b in batch
                    if b.error is None and "pixel_print" in b.meta
                ]
                store.set_pixel_prints(prints)
                stored += len(prints)
                progress.update(len(batch))
    finally:
        progress.close()
    if stored < total:
        log.warning("%d images could not be read for their pixel print (retried next run)", total - stored)
    return stored
