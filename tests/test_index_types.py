"""Issue 4: the index type follows the corpus.

Exact (flat) while small, IVF (SQ8) with nlist and nprobe chosen from the
corpus above ``GLIMPSE_FLAT_MAX``; recall@10 against exact search measured on
held-out queries stays >= 0.95; the trained quantizer is reused by later
publishes and retrained once the corpus has doubled (or halved).
"""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from faiss.contrib.evaluation import knn_intersection_measure

from search.vectors.live import IndexDir, choose_index_spec
from tests.index_support import build_index, publish_arrays

DIM = 64


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int, centres: int = 300) -> np.ndarray:
    """Embedding-like data: points around a few hundred topics."""
    rng = np.random.default_rng(seed)
    c = normalise(np.random.default_rng(1234).normal(size=(centres, DIM)))
    return normalise(c[rng.integers(0, centres, n)] + 0.6 * rng.normal(size=(n, DIM)) / np.sqrt(DIM))


def uniform(n: int, seed: int) -> np.ndarray:
    """No structure at all: the hardest case for an IVF."""
    return normalise(np.random.default_rng(seed).normal(size=(n, DIM)))


def recall_vs_exact(index: faiss.Index, corpus: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    exact = faiss.IndexFlatIP(corpus.shape[1])
    exact.add(corpus)
    _, pos = exact.search(queries, k)
    _, got = index.search(queries, k)
    return knn_intersection_measure(got, ids[pos])


def test_spec_follows_corpus_size(monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "100000")
    assert choose_index_spec(0, 512) == {"type": "flat"}
    assert choose_index_spec(100_000, 512) == {"type": "flat"}
    specs = {n: choose_index_spec(n, 512) for n in (100_001, 400_000, 1_000_000, 1_999_999, 2_000_000, 10_000_000)}
    assert all(s["type"] == "ivf" and s["codec"] == "SQ8" for n, s in specs.items() if n < 2_000_000)
    assert specs[2_000_000]["type"] == specs[10_000_000]["type"] == "ivfpq" and specs[10_000_000]["m"] == 64
    nlists = [s["nlist"] for s in specs.values()]
    assert nlists == sorted(nlists) and nlists[0] >= 1024 and specs[1_000_000]["nlist"] == 4096
    # With the threshold set very low, k-means still gets enough points per list.
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "10")
    assert choose_index_spec(200, 32)["nlist"] * 39 <= 200


@pytest.mark.parametrize("data", [clustered, uniform])
def test_ivf_recall_at_10_against_exact(monkeypatch, data):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "5000")
    corpus = data(20_000, seed=1)
    ids = np.arange(20_000, dtype=np.int64) * 7 + 3  # database ids, not positions
    index, spec, trained = build_index(corpus, ids)
    assert spec["type"] == "ivf" and trained is not None and trained.ntotal == 0
    assert 1 <= spec["nprobe"] <= spec["nlist"]
    queries = data(500, seed=2)  # held out: not in the corpus
    r = recall_vs_exact(index, corpus, ids, queries)
    print(f"{data.__name__}: nlist={spec['nlist']} nprobe={spec['nprobe']} recall@10={r:.3f}")
    assert r >= 0.95


def _publish(d: IndexDir, vecs: np.ndarray) -> dict:
    ids = np.arange(len(vecs), dtype=np.int64)
    v = publish_arrays(d, vecs, ids, vecs[:5], ids[:5], {"dim": DIM, "fingerprint": "m1"})
    return json.loads((d.root / v / "manifest.json").read_text())


def _centroids(d: IndexDir) -> np.ndarray:
    loaded = d.load(use_gpu=False)
    q = faiss.extract_index_ivf(loaded.images).quantizer
    return faiss.rev_swig_ptr(faiss.downcast_index(q).get_xb(), q.ntotal * DIM).reshape(q.ntotal, DIM).copy()


def test_quantizer_reused_until_the_corpus_doubles(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "5000")
    d = IndexDir(tmp_path / "index")
    pool = clustered(50_000, seed=3)
    queries = clustered(300, seed=4)

    m1 = _publish(d, pool[:12_000])
    assert m1["index_type"]["type"] == "ivf" and m1["index_type"]["trained_on"] == 12_000
    assert m1["caption_index_type"] == {"type": "flat"}
    assert (d.root / m1["version"] / "images.trained.faiss").exists()
    c1 = _centroids(d)

    m2 = _publish(d, pool[:20_000])  # grown, but less than 2x: same quantizer, vectors re-added
    assert m2["index_type"]["trained_on"] == 12_000 and m2["index_type"]["nlist"] == m1["index_type"]["nlist"]
    assert np.array_equal(_centroids(d), c1)
    loaded = d.load(use_gpu=False)
    assert loaded.images.ntotal == 20_000
    assert faiss.extract_index_ivf(loaded.images).nprobe == m2["index_type"]["nprobe"]
    assert recall_vs_exact(loaded.images, pool[:20_000], np.arange(20_000), queries) >= 0.95

    m3 = _publish(d, pool[:30_000])  # 2.5x the training size: retrained
    assert m3["index_type"]["trained_on"] == 30_000
    assert not np.array_equal(_centroids(d), c1)
    assert recall_vs_exact(d.load(use_gpu=False).images, pool[:30_000], np.arange(30_000), queries) >= 0.95

    m4 = _publish(d, pool[:14_000])  # shrunk below half: retrained for the smaller corpus
    assert m4["index_type"]["trained_on"] == 14_000

    m5 = _publish(d, pool[:4_000])  # back under the flat threshold: exact again
    assert m5["index_type"] == {"type": "flat"}
    assert not (d.root / m5["version"] / "images.trained.faiss").exists()


def test_model_change_never_reuses_a_quantizer(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "5000")
    d = IndexDir(tmp_path / "index")
    vecs = clustered(13_000, seed=5)
    ids = np.arange(len(vecs), dtype=np.int64)
    publish_arrays(d, vecs[:12_000], ids[:12_000], vecs[:1], ids[:1], {"dim": DIM, "fingerprint": "m1"})
    v = publish_arrays(d, vecs, ids, vecs[:1], ids[:1], {"dim": DIM, "fingerprint": "m2"})
    manifest = json.loads((d.root / v / "manifest.json").read_text())
    assert manifest["index_type"]["trained_on"] == 13_000  # trained afresh for the new model's vectors


def test_cli_builds_an_ivf_above_the_threshold(glimpse, tmp_path, tiny_model, image_factory):
    photos = tmp_path / "photos"
    files = image_factory(photos, 80, size=(40, 40))
    glimpse("index", str(photos), "--model", tiny_model, env={"GLIMPSE_FLAT_MAX": "40"})
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["index_type"] == "ivf" and stats["images_indexed"] == 80
    hits = json.loads(glimpse("search", "--image", str(files[17]), "-k", "1", "--json").stdout)
    assert hits[0]["path"] == str(files[17])
