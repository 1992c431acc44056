"""Near-duplicates over every index type: the candidate pairs found through the live index (exact, a
transient IVF over a large exact one, IVF searched with few lists, IVF-PQ re-scored exactly) are the pairs
an exact all-pairs range search gives. (What the pixel check then makes of them: tests/test_duplicates.py.)"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from search.store.database import Store
from search.vectors.duplicates import CHUNK, similar_pairs
from search.vectors.live import IndexDir
from test_index_types import DIM, clustered
from test_index_types import normalise as unit
from test_publish_stream import add_rows, publish

THRESHOLD = 0.96


def with_planted_copies(n: int, originals: int, seed: int) -> np.ndarray:
    """``n`` clustered vectors (neighbours at cosine ~0.7) whose last rows are copies of the first
    ``originals``: cosine 0.97-0.999 to their original, a few with a second copy (groups of three)."""
    rng = np.random.default_rng(seed)
    base = clustered(n, seed)
    src = list(range(originals)) + list(range(0, originals, 10))
    noise = rng.normal(size=(len(src), DIM)) / np.sqrt(DIM)
    eps = rng.uniform(0.04, 0.2, size=(len(src), 1))
    base[n - len(src) :] = unit(base[src] + eps * noise)
    return base


def exact_pairs(vecs: np.ndarray) -> set[tuple[int, int]]:
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vecs)
    lims, scores, found = flat.range_search(vecs, THRESHOLD)
    a = np.repeat(np.arange(len(vecs)), np.diff(lims).astype(np.int64))
    keep = a != found
    ids = np.arange(1, len(vecs) + 1)  # row ids start at 1
    return {(min(x, y), max(x, y)) for x, y in zip(ids[a[keep]].tolist(), ids[found[keep]].tolist())}


@pytest.mark.parametrize("kind", ["flat", "flat-transient-ivf", "ivf", "ivfpq"])
def test_pairs_through_the_live_index_equal_exact_all_pairs(tmp_path, monkeypatch, kind):
    if kind == "flat-transient-ivf":  # an exact index too big for all pairs: grouped through a transient IVF
        monkeypatch.setattr("search.vectors.duplicates.EXACT_MAX", 1_000)
        kind = "flat"
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "100000" if kind == "flat" else "2000")
    monkeypatch.setenv("GLIMPSE_PQ_MIN", "5000" if kind == "ivfpq" else "100000000")
    vecs = with_planted_copies(8_000, 150, seed=21)
    # What the store holds: float16. The exact answer is computed on the same rounded vectors.
    stored = unit(vecs.astype(np.float16).astype(np.float32))
    store = Store(tmp_path / "db.sqlite")
    try:
        add_rows(store, vecs, 0)
        m = publish(store, tmp_path / "index")
        assert m["index_type"]["type"] == kind
        live = IndexDir(tmp_path / "index").load(use_gpu=False)
        want = exact_pairs(stored)
        assert len(want) >= 150  # the planted copies, and only them
        a, b, _ = similar_pairs(live, store.iter_image_vectors(live.dim, CHUNK), THRESHOLD)
        got = set(zip(a.tolist(), b.tolist()))
        if kind == "ivfpq":
            # Without the exact re-score the codes' rough cosines put pairs on the wrong side of the
            # threshold: the re-score is doing the work.
            assert live.image_rerank is not None
        assert got == want
    finally:
        store.close()
