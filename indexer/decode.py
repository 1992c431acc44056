"""Read, check, hash and decode one image file: what every decode worker runs.

Shared by the CPU worker pool (``indexer.load``) and the GPU path's loader
(``indexer.load_raw``); imports neither, so they do not import each other's
internals. No torch here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from indexer.admit import admit
from indexer.hashing import bytes_hash, file_hash
from search.media.decode import ImageDecodeError, flatten_to_rgb, load_upright, to_uint8_array
from search.media.pixel_print import PRINT_DRAFT, pixel_print
from search.settings import settings


@dataclass
class Loaded:
    index: int  # position in the input list
    pixels: Any  # uint8 HWC array (a torch tensor on the raw path), or None
    meta: dict
    error: str | None
    content_hash: str | None = None  # only when asked for: the worker already holds the bytes
    jpeg: Any = None  # raw mode: this file's bytes, then [start, end) of them in the batch's blob


class LoadedBatch(list):
    """A batch of Loaded; on the raw path ``blob`` holds the raw JPEG bytes of its ``jpeg`` items
    (one tensor per batch, so a batch crosses from the worker in one shared-memory segment)."""

    blob: Any = None


# Files up to this size are read once into memory, hashed and decoded from there;
# bigger ones are hashed in a streaming pass and decoded from disk.
_IN_MEMORY_MAX = 64 << 20


def load_file(
    i: int, path: str, pil_transform: Callable, draft_size: int, want_hash: bool = False, raw_jpeg: bool = False
) -> Loaded:
    """Check, read, hash (when asked), decode and preprocess one file; errors are returned, not raised.

    The size cap and the header come first (``indexer.admit``): a file that fails them is
    never read whole nor hashed. ``raw_jpeg``: a JPEG a GPU can decode comes back
    undecoded, its bytes in ``Loaded.jpeg``."""
    digest = None
    try:
        meta, size = admit(path)
        source: str | bytes = path
        if (raw_jpeg or want_hash) and size <= _IN_MEMORY_MAX:
            # Hashing here, on bytes read for decoding anyway, keeps it off the encoder's thread.
            with open(path, "rb") as f:
                source = f.read()
            if want_hash:
                digest = bytes_hash(source)
            if raw_jpeg:
                from indexer.gpu_decode import nvjpeg_suitable

                if nvjpeg_suitable(source, meta):
                    return Loaded(i, None, meta, None, digest, jpeg=source)
        elif want_hash:
            digest = file_hash(path)
        # JPEG draft decoding stops at the larger of the model's size and what the pixel print needs
        img = load_upright(source, draft_size=max(draft_size, PRINT_DRAFT) if draft_size else draft_size)
        # The duplicate finder's pixel check, from the pixels decoded for the model anyway (hex: meta
        # crosses to the writer as JSON on the Ray path).
        meta["pixel_print"] = pixel_print(img).hex()
        return Loaded(i, to_uint8_array(pil_transform(flatten_to_rgb(img))), meta, None, digest)
    except ImageDecodeError as exc:
        return Loaded(i, None, {}, str(exc), digest)
    except Exception as exc:  # noqa: BLE001 - any bad file must not stop the run
        if isinstance(exc, FileNotFoundError):
            return Loaded(i, None, {}, "file vanished during indexing")
        return Loaded(i, None, {}, f"cannot decode image: {exc.__class__.__name__}: {exc}", digest)


def worker_setup() -> None:
    """In each decode process: lower priority when asked, and die with the indexer.

    Decode workers may run at a lower CPU priority than the encoder (GLIMPSE_DECODE_NICE, read as the
    worker starts; off by default: measured no faster on 2 cores, BENCHMARKS.md)."""
    nice = settings()["GLIMPSE_DECODE_NICE"]
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    # Ctrl-C reaches the whole process group: the indexer stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.uname().sysname == "Linux":  # an indexer killed outright (OOM killer) takes its workers along
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
