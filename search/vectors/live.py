"""The index a server queries: load a published version, search it, hot-swap to a newer one.

Building lives in :mod:`search.vectors.build`, the versioned folder in :mod:`search.vectors.versions`;
their public names are re-exported here for the modules that import them from ``search.vectors.live``.
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
from search.vectors.build import (  # noqa: F401 - re-exported
    RETRAIN_FACTOR,
    TARGET_RECALL,
    Reranker,
    build_streamed,
    can_reuse_training,
    choose_index_spec,
    search,
)
from search.vectors.f16_files import open_f16, prefetch
from search.vectors.versions import KEEP_VERSIONS, ArraySource, IndexDir, VectorSource  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a FAISS build without working GPU support is a CPU build
        return False


def build_index(
    vectors: np.ndarray, ids: np.ndarray, spec: dict | None = None, trained: faiss.Index | None = None
) -> tuple[faiss.Index, dict, faiss.Index | None]:
    """Build an index over vectors in memory: ``(index, spec, trained_empty)`` (tests, benchmarks).
    Compact-code types need their re-rank file: publish those through :class:`IndexDir`."""
    src = ArraySource(np.asarray(vectors), np.asarray(ids, dtype=np.int64))
    sorted_ids, _ = src.snapshot()
    x = np.asarray(vectors, dtype=np.float32)

    def pick(m: int) -> np.ndarray:
        return np.ascontiguousarray(x[np.random.default_rng(0).choice(len(x), min(m, len(x)), replace=False)])

    built = build_streamed(src.chunks(sorted_ids), len(sorted_ids), np.asarray(vectors).shape[-1], spec, trained, pick)
    return built.index, built.spec, built.trained


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
        exactly where its type stores compact codes. ``params`` (e.g. from :meth:`search_params`)
        go to FAISS as they are."""
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

    def search_params(self, sel: faiss.IDSelector | None = None, captions: bool = False) -> faiss.SearchParameters:
        """Search parameters for this index's type carrying ``sel``: an IVF's must repeat its tuned
        nprobe (a bare ``SearchParametersIVF`` searches one list)."""
        spec = self.manifest.get("caption_index_type" if captions else "index_type") or {}
        # Keyword arguments, not attributes: faiss's Python constructor then keeps ``sel`` alive with them.
        if spec.get("type") in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(sel=sel, nprobe=int(spec.get("nprobe") or 1))  # type: ignore[call-arg]
        return faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]


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


def load_version(folder: Path, use_gpu: bool | None = None) -> LoadedIndex:
    manifest = json.loads((folder / "manifest.json").read_text())
    if use_gpu is None:
        use_gpu = gpu_available()
    # On CPU the files are memory-mapped (published versions are never modified): start-up
    # reads nothing, and an IVF index keeps resident only the lists queries touch.
    flags = 0 if use_gpu or not settings()["GLIMPSE_INDEX_MMAP"] else faiss.IO_FLAG_MMAP
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


class LiveIndex:
    """The index a server queries, swapped to a newer published version on demand.

    ``get()`` is cheap (one small file read at most every ``check_every``
    seconds); queries hold the returned object, so a swap never pulls an index
    out from under a running search.
    """

    def __init__(self, index_dir: IndexDir, check_every: float = 1.0):
        self.index_dir = index_dir
        self.check_every = check_every
        self._loaded: LoadedIndex | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def get(self) -> LoadedIndex | None:
        now = time.monotonic()
        if self._loaded is None or now - self._checked >= self.check_every:
            self._refresh(now)
        return self._loaded

    def _refresh(self, now: float) -> None:
        if not self._lock.acquire(blocking=self._loaded is None):
            return  # another thread is loading; keep serving the old one
        try:
            self._checked = now
            for attempt in range(3):
                version = self.index_dir.current_version()
                if not version or (self._loaded is not None and version == self._loaded.version):
                    return
                try:
                    swapped = self._loaded is not None
                    loaded = self.index_dir.load(version)
                    if loaded is not None and swapped:  # a server already running: page its vectors in now
                        loaded.prefetch()
                    self._loaded = loaded
                    return
                except Exception:  # pruned or replaced between reading `current` and loading
                    log.warning(
                        "could not load index version %s (attempt %d); keeping %s",
                        version,
                        attempt + 1,
                        self._loaded.version if self._loaded else None,
                        exc_info=attempt == 2,
                    )
                    time.sleep(0.05)
        finally:
            self._lock.release()
