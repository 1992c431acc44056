"""One published index version in memory: read its files (memory-mapped on CPU) and search them.

:mod:`search.vectors.versions` finds and writes versions, :mod:`search.vectors.live` keeps the one
a server queries; both load through :func:`load_version` here, so neither imports the other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from search.settings import settings
from search.vectors.build import Reranker, search
from search.vectors.f16_files import open_f16, prefetch

log = logging.getLogger("search.vectors.live")


def gpu_available() -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a FAISS build without working GPU support is a CPU build
        return False


@dataclass
class LoadedIndex:
    version: str
    manifest: dict
    images: faiss.Index
    captions: faiss.Index | None
    image_rerank: Reranker | None = None
    caption_rerank: Reranker | None = None

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def search(
        self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of the ``k`` best images per query: the index's candidates, re-ranked
        exactly where its type stores compact codes. ``params`` go to FAISS as they are."""
        return search(self.images, queries, k, params, self.image_rerank)

    def search_captions(
        self, queries: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.captions is None:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return search(self.captions, queries, k, params, self.caption_rerank)

    def prefetch(self) -> None:
        """Start paging the re-rank vectors into the page cache in the background (see f16_files.prefetch).
        Called once a server is warm, not at load: at start-up the disk is busy loading the model."""
        paths = [p for r in (self.image_rerank, self.caption_rerank) if r is not None for p in r.vectors.paths]
        if paths:
            threading.Thread(
                target=_prefetch_gently, args=(paths, self.version), name="f16-prefetch", daemon=True
            ).start()


def _prefetch_gently(paths: list[Path], version: str) -> None:
    """``prefetch`` at the lowest CPU priority this thread can take (queries come first), logged."""
    with contextlib.suppress(AttributeError, OSError):  # Linux: nice applies per thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    start = time.monotonic()
    done = prefetch(paths)
    log.info(
        "index %s: %.1f GiB of re-rank vectors in the page cache after %.0f s",
        version,
        done / 2**30,
        time.monotonic() - start,
    )


def load_version(folder: Path, use_gpu: bool | None = None, mmap: bool | None = None) -> LoadedIndex:
    """The version in ``folder``; ``mmap`` None: GLIMPSE_INDEX_MMAP of this process."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if use_gpu is None:
        use_gpu = gpu_available()
    if mmap is None:
        mmap = bool(settings()["GLIMPSE_INDEX_MMAP"])
    # On CPU the files are memory-mapped (published versions are never modified): start-up
    # reads nothing, and an IVF index keeps resident only the lists queries touch.
    flags = faiss.IO_FLAG_MMAP if mmap and not use_gpu else 0
    found: dict[str, tuple[faiss.Index | None, Reranker | None]] = {}
    for name, key in (("images", "index_type"), ("captions", "caption_index_type")):
        path = folder / f"{name}.faiss"
        if not path.exists():
            found[name] = (None, None)
            continue
        index = faiss.read_index(str(path), flags)
        spec = manifest.get(key) or {}
        if "nprobe" in spec:
            faiss.extract_index_ivf(index).nprobe = spec["nprobe"]
        rerank = None
        if spec.get("type") == "ivfpq":  # float16 vectors read row by row from disk: in the page cache, not the heap
            rerank = Reranker(open_f16(folder, name, spec), np.load(folder / f"{name}.ids.npy"), spec["rerank"])
        if use_gpu:
            index = _to_gpu(index)
        found[name] = (index, rerank)
    images, image_rerank = found["images"]
    assert images is not None, f"{folder} has no images.faiss"
    log.info("FAISS index %s loaded on %s: %d images", folder.name, "GPU" if use_gpu else "CPU", images.ntotal)
    return LoadedIndex(folder.name, manifest, images, found["captions"][0], image_rerank, found["captions"][1])


_gpu_res = None


def _to_gpu(index: faiss.Index) -> faiss.Index:
    global _gpu_res
    try:
        if _gpu_res is None:
            _gpu_res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(_gpu_res, 0, index)
    except Exception as exc:  # noqa: BLE001 - e.g. an index type without GPU support
        log.warning("FAISS GPU transfer failed (%s); staying on CPU", exc)
        return index
