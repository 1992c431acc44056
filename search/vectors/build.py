"""Building a FAISS index from a stream of vector chunks: choose a type for the corpus size,
train on a sample, add chunk by chunk, tune nprobe; and the exact re-rank of compact codes.

Nothing here holds the corpus: a build holds the index being built, one chunk, a training
sample (``sample_size``) and a few hundred probe queries with their exact top-k.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from search.settings import settings
from search.store.schema import unit_f32
from search.vectors.f16_files import F16Rows, F16Writer

log = logging.getLogger("search.vectors.live")

TARGET_RECALL = 0.97
# An IVF's coarse quantizer is k-means over a sample of the corpus: the slow
# part of a build (minutes at a million vectors). A publish reuses the live
# version's trained quantizer (and, when its type still fits, its whole index:
# an incremental publish) until the corpus has grown (or shrunk) by this factor
# since it was trained: lists then hold ~2x their trained share and a query
# scans ~2x the codes at the same nprobe, while recall stays near the tuned one.
RETRAIN_FACTOR = 2.0
# Compact codes (IVF-PQ) return RERANK * k candidates, re-scored exactly against the stored float16
# vectors: PQ alone orders near neighbours badly. Measured at 1M (bench/publish_scale.py, PQ64, 100
# queries): recall@10 0.914 with 10x k candidates at any nprobe, 0.98 with 40x (and with 100x) at nprobe 16.
RERANK = 40
PROBE_QUERIES = 200
PLATEAU = 0.005  # recall gained by two doublings of nprobe below which more lists are not worth it
NO_ID = np.iinfo(np.int64).max  # sorts after every id

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]  # (ids int64, float16/float32 vectors) in id order


def choose_index_spec(n: int, dim: int) -> dict:
    """Index type from corpus size: exact while small, IVF-SQ8 in the middle, IVF-PQ with exact
    re-rank above GLIMPSE_PQ_MIN; nlist ~ 4*sqrt(n)."""
    s = settings()
    if n <= s["GLIMPSE_FLAT_MAX"]:  # exact search while small: fast enough, and no recall to lose
        return {"type": "flat"}
    nlist = int(2 ** round(math.log2(max(256, 4 * math.sqrt(n)))))
    # k-means wants ~39+ points per centroid (only bites when GLIMPSE_FLAT_MAX is set very low).
    nlist = min(nlist, 2 ** int(math.log2(max(1, n // 39))))
    if n >= s["GLIMPSE_PQ_MIN"] and dim % 8 == 0:
        # 8 dims per byte: 64 B per 512-d vector in RAM (SQ8: 512 B); the float16 vectors for the
        # re-rank stay on disk, memory-mapped. An HNSW coarse quantizer keeps assigning 10M vectors
        # to tens of thousands of lists from costing a flat scan of every centroid.
        return {"type": "ivfpq", "nlist": nlist, "m": dim // 8, "rerank": RERANK}
    # SQ8 keeps a million 512-d vectors in ~0.5 GB with ~no ranking loss.
    return {"type": "ivf", "nlist": nlist, "codec": "SQ8"}


def is_ivf(spec: dict | None) -> bool:
    return spec is not None and spec.get("type") in ("ivf", "ivfpq")


def can_reuse_training(n: int, dim: int, trained_spec: dict | None) -> bool:
    """Whether an IVF trained on ``trained_spec['trained_on']`` vectors still fits ``n``."""
    if not is_ivf(trained_spec) or choose_index_spec(n, dim)["type"] != trained_spec["type"]:  # type: ignore[index]
        return False
    trained_on = int(trained_spec.get("trained_on") or 0)  # type: ignore[union-attr]
    return trained_on > 0 and trained_on / RETRAIN_FACTOR < n < trained_on * RETRAIN_FACTOR


def sample_size(spec: dict, n: int) -> int:
    # faiss warns under 39 points per centroid; 64 as before for SQ8, 40 for the big PQ lists (k-means
    # cost grows with sample x nlist: 10M vectors -> 16k lists -> 655k points, two-level clustering).
    per = 40 if spec["type"] == "ivfpq" else 64
    return min(n, per * spec["nlist"])


# ------------------------------------------------------------------ re-rank


@dataclass
class Reranker:
    """Exact re-scoring of an index's candidates against float16 vectors on disk (memory-mapped)."""

    vectors: F16Rows  # row i is the vector of ids[i]
    ids: np.ndarray  # sorted int64
    factor: int = RERANK

    def search(
        self, index: faiss.Index, q: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        kk = max(k, min(index.ntotal, self.depth(k)))
        _, cand = index.search(q, kk, params=params)
        return self.rescore(q, cand, k)

    def depth(self, k: int) -> int:
        """Candidates to re-rank for the best ``k``: ``factor`` per result for the first ten, ten per result
        beyond. A true neighbour's rank among PQ codes trails its true rank by a margin that grows slower
        than k: on 200k scene vectors (bench/synth.py) 400 candidates gave recall@10 0.974 and 1,000 gave
        recall@100 0.976 (4,000: 0.9996). The engine's first fetch is 50 results: 500 reads, not 2,000; each
        is a random disk read at 10M while the vectors are not in the page cache."""
        return max(self.factor * min(k, 10), 10 * k)

    def rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of each row's candidate ids (-1: none) by their exact cosine to ``q``'s row;
        ``(scores, ids)``, padded with -inf and -1 where a row has fewer than ``k``."""
        # Each row's ids sorted, the missing ones last: the mmap is read front to back, and equal scores
        # keep the lower id first.
        c = np.sort(np.where(cand >= 0, cand, NO_ID), axis=1)
        found = c != NO_ID
        pos = np.minimum(np.searchsorted(self.ids, np.where(found, c, 0)), len(self.ids) - 1)
        vecs = unit_f32(self.vectors.take(pos)).reshape(*c.shape, -1)
        exact = np.full(c.shape, -np.inf, np.float32)
        for r, n in enumerate(found.sum(axis=1)):  # each row's found ids are a prefix (the -1s sorted last)
            exact[r, :n] = vecs[r, :n] @ q[r]
        top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores = np.full((len(c), k), -np.inf, np.float32)
        ids = np.full((len(c), k), -1, np.int64)
        m = top.shape[1]
        scores[:, :m], ids[:, :m] = np.take_along_axis(exact, top, 1), np.take_along_axis(c, top, 1)
        ids[:, :m][~np.take_along_axis(found, top, 1)] = -1
        return scores, ids


def search(
    index: faiss.Index,
    q: np.ndarray,
    k: int,
    params: faiss.SearchParameters | None = None,
    rerank: Reranker | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    q = np.ascontiguousarray(q, dtype=np.float32)
    if rerank is not None:
        return rerank.search(index, q, k, params)
    return index.search(q, k, params=params)


# ------------------------------------------------------------------ build


@dataclass
class Built:
    index: faiss.Index
    spec: dict
    trained: faiss.Index | None  # the trained, empty IVF to keep for the next publish (None: flat)
    ids: np.ndarray  # the ids added, sorted
    rerank: Reranker | None = None  # compact codes: the exact re-rank of the index's candidates


def empty_index(dim: int, spec: dict) -> faiss.Index:
    if spec["type"] == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if spec["type"] == "ivfpq":
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efSearch = 128
        index = faiss.IndexIVFPQ(hnsw, dim, spec["nlist"], spec["m"], 8, faiss.METRIC_INNER_PRODUCT)
        # The re-rank forgives coarse codes: 10 k-means iterations on 64 points per code (faiss: 25 on
        # 256) train the 64 sub-quantizers ~10x faster (measured 218 s at 100k vectors before, loaded machine).
        index.pq.cp.niter = 10
        index.pq.cp.max_points_per_centroid = 64
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if spec.get("codec") == "SQ8":
        return faiss.IndexIVFScalarQuantizer(
            quantizer, dim, spec["nlist"], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    return faiss.IndexIVFFlat(quantizer, dim, spec["nlist"], faiss.METRIC_INNER_PRODUCT)


def train(dim: int, spec: dict, sample: np.ndarray) -> faiss.Index:
    index = empty_index(dim, spec)
    if spec["type"] == "ivfpq":
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer.add(two_level_centroids(sample, spec["nlist"]))
    index.train(sample)
    return index


def two_level_centroids(x: np.ndarray, k: int, niter: int = 10) -> np.ndarray:
    """``k`` unit centroids by two-level spherical k-means: sqrt(k) coarse clusters, each then split
    into a share of ``k`` proportional to its size; ~sqrt(k) times less work than flat k-means.

    faiss.contrib.clustering.two_level_clustering does the same but gives a small coarse cluster
    zero (or more than its points) sub-centroids and then fails or warns; here every non-empty
    cluster gets between one and its own size, and the shares still sum to ``k``."""
    nc1 = max(1, int(math.sqrt(k)))
    km = faiss.Kmeans(x.shape[1], nc1, niter=niter, max_points_per_centroid=2000, spherical=True)
    km.train(x)
    _, assign = km.assign(x)
    sizes = np.bincount(assign, minlength=nc1)
    share = _shares(sizes, k)
    order = np.argsort(assign, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts: list[np.ndarray] = []
    for c in np.flatnonzero(share):
        sub = x[order[bounds[c] : bounds[c + 1]]]
        if share[c] == len(sub):
            parts.append(sub)  # as many centroids as points: the points themselves
            continue
        km = faiss.Kmeans(x.shape[1], int(share[c]), niter=niter, spherical=True)
        km.train(sub)
        parts.append(np.asarray(km.centroids))
    return np.ascontiguousarray(unit_f32(np.concatenate(parts)))


def _shares(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` over clusters of ``sizes`` in proportion, each non-empty one getting 1..size
    (largest remainders first), summing to ``k`` (``k`` <= total size)."""
    if k > sizes.sum():
        raise ValueError(f"{k} centroids from {sizes.sum()} points")
    exact = sizes * (k / sizes.sum())
    share = np.minimum(np.maximum(np.floor(exact).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    while share.sum() < k:  # give to the clusters furthest below their exact share that have room
        room = np.flatnonzero(share < sizes)
        gap = (exact - share)[room]
        take = room[np.argsort(-gap, kind="stable")[: k - share.sum()]]
        share[take] += 1
    while share.sum() > k:  # take from those furthest above it that keep at least one
        over = np.flatnonzero(share > 1)
        gap = (share - exact)[over]
        take = over[np.argsort(-gap, kind="stable")[: share.sum() - k]]
        share[take] -= 1
    return share


class Probe:
    """Probe queries and their exact top-k over the stream, gathered while the chunks go by."""

    def __init__(self, sample: np.ndarray, k: int = 10, queries: int = PROBE_QUERIES):
        # Midpoints of two corpus vectors, not corpus vectors: a query that is its own nearest
        # neighbour lands in its own list at nprobe=1 and flatters the recall.
        rng = np.random.default_rng(0)
        q = sample[rng.integers(0, len(sample), queries)] + sample[rng.integers(0, len(sample), queries)]
        self.q = np.ascontiguousarray(unit_f32(q))
        self.k = k
        self.heap = faiss.ResultHeap(len(self.q), k, keep_max=True)

    def see(self, x: np.ndarray, ids: np.ndarray) -> None:
        scores = self.q @ x.T
        kk = min(self.k, len(ids))
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        self.heap.add_result(np.take_along_axis(scores, top, 1), ids[top])

    def truth(self) -> np.ndarray:
        self.heap.finalize()
        return self.heap.I


def tune_nprobe(index: faiss.Index, probe: Probe, rerank: Reranker | None = None) -> int:
    """Smallest nprobe (a power of two) whose recall@k against exact search reaches TARGET_RECALL.

    Stops early, with a warning, where more lists no longer buy recall (two doublings gaining under
    PLATEAU: the codes, not the lists, are what limits it; before, such a build went on to scan every
    list at every query, as the first 10M benchmark's did) or at nlist.
    """
    # Imported here: it loads unittest and multiprocessing, which a server never needs.
    from faiss.contrib.evaluation import knn_intersection_measure

    ivf = faiss.extract_index_ivf(index)
    truth = probe.truth()
    tried: list[tuple[int, float]] = []
    nprobe = 1
    while True:
        ivf.nprobe = nprobe
        _, got = search(index, probe.q, probe.k, rerank=rerank)
        tried.append((nprobe, knn_intersection_measure(got, truth)))
        if tried[-1][1] >= TARGET_RECALL:
            return nprobe
        flat = len(tried) >= 3 and tried[-1][1] - tried[-3][1] < PLATEAU
        if flat or nprobe >= ivf.nlist:
            best = tried[-3][0] if flat else ivf.nlist
            log.warning(
                "recall@%d target %.2f not reached (%s); nprobe=%d (%s)",
                probe.k,
                TARGET_RECALL,
                ", ".join(f"{r:.3f} at {p}" for p, r in tried),
                best,
                "more lists gain nothing" if flat else "every list",
            )
            return best
        nprobe = min(nprobe * 2, ivf.nlist)


def build_streamed(
    chunks: Chunks,
    n: int,
    dim: int,
    spec: dict | None = None,
    trained: faiss.Index | None = None,
    sample: Callable[[int], np.ndarray] | None = None,
    vectors_path: Path | None = None,
) -> Built:
    """Build an inner-product index over ``chunks`` (at most ``n`` rows, in id order).

    ``sample(m)`` returns ``m`` random corpus vectors (unit float32) to train on and probe with;
    ``trained`` (with the ``spec`` it came with) skips k-means. An ``ivfpq`` build also writes the
    float16 vectors for its re-rank to ``vectors_path`` as it goes.
    """
    spec = dict(spec or choose_index_spec(n, dim))
    t = time.perf_counter()
    probe = None
    if spec["type"] == "flat":
        index, trained_empty = empty_index(dim, spec), None
    else:
        assert sample is not None, "an IVF build needs a training sample"
        if trained is not None:
            index = faiss.clone_index(trained)
            index.reset()
            probe = Probe(sample(min(n, 2 * PROBE_QUERIES)))
        else:
            xt = sample(sample_size(spec, n))
            log_phase("sampled %d training vectors", t, len(xt))
            index = train(dim, spec, xt)
            spec["trained_on"] = int(n)
            probe = Probe(xt)
            del xt
            log_phase("trained %s nlist=%d", t, spec["type"], spec["nlist"])
        trained_empty = faiss.clone_index(index)
    writer = F16Writer(vectors_path, n, dim) if spec["type"] == "ivfpq" and vectors_path else None
    added: list[np.ndarray] = []
    for ids, vecs in chunks:
        x = unit_f32(vecs)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        index.add_with_ids(x, ids)
        if probe is not None:
            probe.see(x, ids)
        if writer is not None:
            writer.write(vecs)
        added.append(ids)
    all_ids = np.concatenate(added) if added else np.zeros(0, np.int64)
    rerank = None
    if writer is not None:
        writer.close()
        rerank = Reranker(F16Rows([vectors_path]), all_ids)  # type: ignore[list-item]
        spec["f16_files"] = [vectors_path.name]  # type: ignore[union-attr]
    log_phase("added %d vectors", t, index.ntotal)
    if probe is not None and index.ntotal:
        spec["nprobe"] = tune_nprobe(index, probe, rerank)
        faiss.extract_index_ivf(index).nprobe = spec["nprobe"]
        log_phase("tuned nprobe=%d", t, spec["nprobe"])
    if is_ivf(spec):
        log.info(
            "built %s nlist=%d over %d vectors in %.1fs (%s), nprobe=%s",
            spec["type"],
            spec["nlist"],
            index.ntotal,
            time.perf_counter() - t,
            "reused quantizer" if trained is not None else "trained",
            spec.get("nprobe"),
        )
    return Built(index, spec, trained_empty, all_ids, rerank)


def log_phase(what: str, t0: float, *args) -> None:
    """A build step's time since ``t0`` and the process's memory then, in the log (a 10M publish
    runs for most of an hour: this is where its time and memory go)."""
    log.info(what + " at %.1fs; %s", *args, time.perf_counter() - t0, memory())


def memory() -> str:
    """Resident memory now and at peak, and the anonymous part (the heap, not mapped files)."""
    try:
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    except OSError:
        return "memory unknown"
    mib = {k: int(status[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM", "RssAnon") if k in status}
    return ", ".join(f"{k} {v} MiB" for k, v in mib.items())
