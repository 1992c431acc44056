"""FAISS index handling: choose a type for the corpus size, publish, load, hot-swap.

Layout under ``<home>/index``: one folder per version (``000001``…) holding
``images.faiss``, ``captions.faiss`` and ``manifest.json``, and a ``current``
file naming the live version. Publishing writes a complete new folder, fsyncs
it, then replaces ``current`` atomically, so a reader sees either the old or
the new index, never a half-written one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from search.settings import settings

log = logging.getLogger(__name__)

TARGET_RECALL = 0.97
KEEP_VERSIONS = 2


def gpu_available() -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a FAISS build without working GPU support is a CPU build
        return False


# ------------------------------------------------------------------ build

# An IVF's coarse quantizer is k-means over a sample of the corpus: the slow
# part of a build (minutes at a million vectors). A publish reuses the live
# version's trained quantizer and only re-adds the vectors, until the corpus
# has grown (or shrunk) by this factor since it was trained.
RETRAIN_FACTOR = 2.0


def choose_index_spec(n: int, dim: int) -> dict:
    """Index type from corpus size: exact while small, then IVF with nlist ~ 4*sqrt(n)."""
    if n <= settings()["GLIMPSE_FLAT_MAX"]:  # exact search while small: fast enough, and no recall to lose
        return {"type": "flat"}
    nlist = int(2 ** round(math.log2(max(256, 4 * math.sqrt(n)))))
    # k-means wants ~39+ points per centroid (only bites when GLIMPSE_FLAT_MAX is set very low).
    nlist = min(nlist, 2 ** int(math.log2(max(1, n // 39))))
    # SQ8 keeps a million 512-d vectors in ~0.5 GB with ~no ranking loss.
    return {"type": "ivf", "nlist": nlist, "codec": "SQ8"}


def can_reuse_training(n: int, dim: int, trained_spec: dict | None) -> bool:
    """Whether an IVF trained on ``trained_spec['trained_on']`` vectors still fits ``n``."""
    if not trained_spec or trained_spec.get("type") != "ivf" or choose_index_spec(n, dim)["type"] != "ivf":
        return False
    trained_on = int(trained_spec.get("trained_on") or 0)
    return trained_on > 0 and trained_on / RETRAIN_FACTOR < n < trained_on * RETRAIN_FACTOR


def build_index(
    vectors: np.ndarray, ids: np.ndarray, spec: dict | None = None, trained: faiss.Index | None = None
) -> tuple[faiss.Index, dict, faiss.Index | None]:
    """Build an inner-product index over normalised vectors with database ids.

    Returns ``(index, spec, trained_empty)``; ``trained_empty`` is the trained
    but empty IVF (``None`` for flat) to keep for the next publish. Pass it
    back as ``trained`` (with the spec it came with) to skip k-means.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, dim = vectors.shape if vectors.ndim == 2 else (0, vectors.shape[-1])
    spec = dict(spec or choose_index_spec(n, dim))
    if spec["type"] == "flat":
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if n:
            index.add_with_ids(vectors, ids)
        return index, spec, None
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    if trained is not None:
        index = faiss.clone_index(trained)
        index.reset()
        how = f"reused quantizer trained on {spec.get('trained_on')} vectors"
    else:
        index = _empty_ivf(dim, spec)
        sample = vectors[rng.choice(n, size=min(n, 64 * spec["nlist"]), replace=False)]
        index.train(sample)
        spec["trained_on"] = int(n)
        how = "trained"
    trained_empty = faiss.clone_index(index)
    index.add_with_ids(vectors, ids)
    spec["nprobe"] = tune_nprobe(index, vectors, ids, rng)
    index.nprobe = spec["nprobe"]  # type: ignore[attr-defined]  # an IndexIVF; faiss types it as Index
    log.info(
        "built IVF%d,%s over %d vectors in %.1fs (%s), nprobe=%d",
        spec["nlist"],
        spec.get("codec", "Flat"),
        n,
        time.perf_counter() - t,
        how,
        spec["nprobe"],
    )
    return index, spec, trained_empty


def _empty_ivf(dim: int, spec: dict) -> faiss.Index:
    quantizer = faiss.IndexFlatIP(dim)
    if spec.get("codec") == "SQ8":
        return faiss.IndexIVFScalarQuantizer(
            quantizer, dim, spec["nlist"], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    return faiss.IndexIVFFlat(quantizer, dim, spec["nlist"], faiss.METRIC_INNER_PRODUCT)


def tune_nprobe(index, vectors: np.ndarray, ids: np.ndarray, rng, k: int = 10, queries: int = 200) -> int:
    """Smallest nprobe whose recall@k against exact search reaches TARGET_RECALL.

    Queries are midpoints of two random corpus vectors, not corpus vectors
    themselves: a query that is its own nearest neighbour lands in its own
    list at nprobe=1 and flatters the recall.
    """
    # recall@k: shared ids / (queries * k). Imported here: it loads unittest and multiprocessing,
    # which a server or a no-op reindex (both import this module) never needs.
    from faiss.contrib.evaluation import knn_intersection_measure

    n = len(vectors)
    a = vectors[rng.integers(0, n, size=queries)]
    b = vectors[rng.integers(0, n, size=queries)]
    q = a + b
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q = np.ascontiguousarray(q, dtype=np.float32)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, positions = exact.search(q, k)
    truth = ids[positions]
    nprobe = 1
    while True:
        index.nprobe = nprobe
        _, got = index.search(q, k)
        if knn_intersection_measure(got, truth) >= TARGET_RECALL or nprobe >= index.nlist:
            return min(nprobe, index.nlist)
        nprobe *= 2


# ------------------------------------------------------------------ publish


@dataclass
class LoadedIndex:
    version: str
    manifest: dict
    images: faiss.Index
    captions: faiss.Index | None

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class IndexDir:
    """The versioned index folder of one GLIMPSE_HOME."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def current_file(self) -> Path:
        return self.root / "current"

    def current_version(self) -> str | None:
        try:
            v = self.current_file.read_text().strip()
        except FileNotFoundError:
            return None
        return v if v and (self.root / v / "manifest.json").exists() else None

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())

    def _next_version(self) -> str:
        existing = [int(v) for v in self.versions()]
        return f"{(max(existing) + 1) if existing else 1:06d}"

    def publish(
        self,
        image_vectors: np.ndarray,
        image_ids: np.ndarray,
        caption_vectors: np.ndarray,
        caption_ids: np.ndarray,
        manifest: dict,
        spec: dict | None = None,
    ) -> str:
        """Build, write beside the live version, switch atomically, prune old ones.

        On any failure (a full disk, an interrupt) nothing half-written is left behind and
        ``current`` still names the version it named before.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        version = self._next_version()
        tmp = self.root / f".tmp-{version}-{os.getpid()}"
        final = self.root / version
        cur_tmp = self.root / f".current-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            built = {}
            for name, key, vecs, ids, given in (
                ("images", "index_type", image_vectors, image_ids, spec),
                ("captions", "caption_index_type", caption_vectors, caption_ids, None),
            ):
                prev_spec, trained = (given, None) if given else self._reusable_training(name, key, len(ids), manifest)
                index, built[key], empty = build_index(vecs, ids, prev_spec, trained)
                faiss.write_index(index, str(tmp / f"{name}.faiss"))
                if empty is not None:
                    faiss.write_index(empty, str(tmp / f"{name}.trained.faiss"))
            img_spec, cap_spec = built["index_type"], built["caption_index_type"]
            manifest = dict(
                manifest,
                version=version,
                images=int(len(image_ids)),
                captions=int(len(caption_ids)),
                index_type=img_spec,
                caption_index_type=cap_spec,
                created_at=time.time(),
            )
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            for f in tmp.iterdir():
                _fsync_file(f)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            cur_tmp.write_text(version + "\n")
            _fsync_file(cur_tmp)
            os.replace(cur_tmp, self.current_file)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.current_version() != version:  # renamed in but never made live
                shutil.rmtree(final, ignore_errors=True)
            cur_tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)
        log.info(
            "published index version %s: %d images, %d captions (%s)",
            version,
            len(image_ids),
            len(caption_ids),
            img_spec["type"],
        )
        self.prune()
        return version

    def _reusable_training(self, name: str, key: str, n: int, manifest: dict) -> tuple[dict | None, faiss.Index | None]:
        """The live version's trained, empty IVF for ``name`` if it still suits ``n`` vectors."""
        live = self.current_version()
        if live is None:
            return None, None
        folder = self.root / live
        try:
            old = json.loads((folder / "manifest.json").read_text())
            spec = old.get(key) or {}
            if (
                old.get("dim") != manifest.get("dim")
                or old.get("fingerprint") != manifest.get("fingerprint")
                or not can_reuse_training(n, int(manifest["dim"]), spec)
            ):
                return None, None
            trained = faiss.read_index(str(folder / f"{name}.trained.faiss"))
        except (OSError, ValueError, KeyError, RuntimeError):
            return None, None  # pruned meanwhile, or an older version without one: train afresh
        return {k: spec[k] for k in ("type", "nlist", "codec", "trained_on") if k in spec}, trained

    def prune(self, keep: int = KEEP_VERSIONS) -> None:
        live = self.current_version()
        versions = self.versions()
        for v in versions[:-keep] if keep else versions:
            if v != live:
                shutil.rmtree(self.root / v, ignore_errors=True)
        # Leftovers of a publish killed half-way (only one job runs at a time).
        for p in self.root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".current-*"):
            p.unlink(missing_ok=True)

    def load(self, version: str | None = None, use_gpu: bool | None = None) -> LoadedIndex | None:
        version = version or self.current_version()
        if version is None:
            return None
        folder = self.root / version
        manifest = json.loads((folder / "manifest.json").read_text())
        if use_gpu is None:
            use_gpu = gpu_available()
        # On CPU the files are memory-mapped (published versions are never modified): start-up
        # reads nothing, and an IVF index keeps resident only the lists queries touch.
        flags = 0 if use_gpu or not settings()["GLIMPSE_INDEX_MMAP"] else faiss.IO_FLAG_MMAP
        images = faiss.read_index(str(folder / "images.faiss"), flags)
        if "nprobe" in manifest.get("index_type", {}):
            faiss.extract_index_ivf(images).nprobe = manifest["index_type"]["nprobe"]
        cap_path = folder / "captions.faiss"
        captions = faiss.read_index(str(cap_path), flags) if cap_path.exists() else None
        if use_gpu:
            images = _to_gpu(images)
            captions = _to_gpu(captions) if captions is not None else None
        log.info("FAISS index %s loaded on %s: %d images", version, "GPU" if use_gpu else "CPU", images.ntotal)
        return LoadedIndex(version, manifest, images, captions)


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
                    self._loaded = self.index_dir.load(version)
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
