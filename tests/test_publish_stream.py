"""Issue 15 (publish half): vectors stream from the store in chunks; a publish updates the live
version incrementally (deleted, added and re-embedded rows) without touching its files; compact
codes re-ranked against the stored float16 vectors keep recall; a publish that fails half-way
leaves the live version serving."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
from faiss.contrib.evaluation import knn_intersection_measure

from indexer.publish import StoreSource
from search.store.database import Store
from search.store.schema import pack_vector
from search.vectors.f16_files import F16Rows
from search.vectors.live import IndexDir
from test_index_types import DIM, clustered

REPO = Path(__file__).resolve().parent.parent
MANIFEST = {"dim": DIM, "fingerprint": "m1"}


def add_rows(store: Store, vecs: np.ndarray, start: int) -> None:
    rows = [
        dict(path=f"/p/{start + i}.jpg", size=1, mtime=0.0, status="indexed", vector=pack_vector(v))
        for i, v in enumerate(vecs)
    ]
    with store.transaction() as s:
        store.write_images(s, rows)


def reembed(store: Store, ids: list[int], vecs: np.ndarray) -> None:
    with store.transaction() as s:
        store.write_images(s, [], [(i, {"vector": pack_vector(v), "status": "indexed"}) for i, v in zip(ids, vecs)])


def delete(store: Store, ids: list[int]) -> None:
    with store.transaction() as s:
        store.delete_images(s, ids)


def publish(store: Store, root: Path, chunk: int = 1000, rebuild: bool = False) -> dict:
    d = IndexDir(root)
    v = d.publish_sources(
        StoreSource(store, "images", DIM, chunk), StoreSource(store, "captions", DIM, chunk), MANIFEST, rebuild=rebuild
    )
    return json.loads((d.root / v / "manifest.json").read_text())


def exact_top(store: Store, q: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    vecs, ids = store.image_vectors(DIM)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vecs)
    scores, pos = flat.search(q, k)
    return scores, ids[pos]


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()


def test_streamed_exact_publish_ranks_as_an_in_memory_search(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "100000")
    add_rows(store, clustered(12_000, seed=1), 0)
    delete(store, list(range(5, 12_000, 97)))  # gaps in the ids: chunks are id ranges, not positions
    m = publish(store, tmp_path / "index", chunk=997)  # 12 chunks
    assert m["index_type"] == {"type": "flat"} and m["built"]["images"] == "from scratch"
    q = clustered(50, seed=2)
    want_s, want_i = exact_top(store, q)
    got_s, got_i = IndexDir(tmp_path / "index").load(use_gpu=False).search(q, 10)
    assert np.array_equal(got_i, want_i)
    assert np.allclose(got_s, want_s, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_incremental_publish_equals_a_fresh_one_and_leaves_the_live_files_alone(store, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "100000" if kind == "flat" else "2000")
    monkeypatch.setenv("GLIMPSE_PQ_MIN", "5000" if kind == "ivfpq" else "100000000")
    pool = clustered(9_000, seed=3)
    add_rows(store, pool[:8_000], 0)
    root = tmp_path / "index"
    m1 = publish(store, root)
    assert m1["index_type"]["type"] == kind
    live = root / m1["version"]
    before = hashes(live)

    delete(store, list(range(1, 8_000, 40)))  # 200 deleted
    add_rows(store, pool[8_000:8_400], 8_000)  # 400 new
    changed = list(range(3, 8_000, 50))  # re-embedded in place: same ids, new vectors
    new_vecs = clustered(len(changed), seed=9)
    reembed(store, changed, new_vecs)
    m2 = publish(store, root)

    assert m2["built"]["images"] == "incremental"
    assert hashes(live) == before  # the live version's files were read, never written
    loaded = IndexDir(root).load(use_gpu=False)
    assert loaded.version == m2["version"] and loaded.images.ntotal == len(store.vector_ids("images")[0])
    assert np.array_equal(np.load(root / m2["version"] / "images.ids.npy"), store.vector_ids("images")[0])
    # A re-embedded row is found by its new vector, and scores as the new vector.
    s, i = loaded.search(new_vecs[:20], 1)
    assert list(i[:, 0]) == changed[:20] and np.all(s[:, 0] > 0.99)
    q = clustered(200, seed=4)
    if kind == "flat":
        m3 = publish(store, root, rebuild=True)
        assert m3["built"]["images"] == "from scratch"
        fresh = IndexDir(root).load(use_gpu=False)
        assert np.array_equal(loaded.search(q, 10)[1], fresh.search(q, 10)[1])
        assert np.array_equal(loaded.search(q, 10)[1], exact_top(store, q)[1])
    else:
        assert knn_intersection_measure(loaded.search(q, 10)[1], exact_top(store, q)[1]) >= 0.95


def test_compact_codes_reranked_keep_recall(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "2000")
    monkeypatch.setenv("GLIMPSE_PQ_MIN", "10000")
    add_rows(store, clustered(15_000, seed=5), 0)
    m = publish(store, tmp_path / "index", chunk=4000)
    spec = m["index_type"]
    assert spec["type"] == "ivfpq" and spec["m"] == DIM // 8
    folder = tmp_path / "index" / m["version"]
    # The float16 vectors for the re-rank stay on disk: read row by row, neither loaded into the heap
    # nor memory-mapped (a map's fault-around made the resident set grow by ~64 KiB per candidate).
    loaded = IndexDir(tmp_path / "index").load(use_gpu=False)
    assert isinstance(loaded.image_rerank.vectors, F16Rows) and len(loaded.image_rerank.vectors) == 15_000
    assert (folder / "images.f16.npy").exists()
    q = clustered(300, seed=6)
    loaded.search(q, 10)
    assert str(folder / "images.f16.npy") not in Path("/proc/self/maps").read_text()
    truth = exact_top(store, q)[1]
    assert knn_intersection_measure(loaded.search(q, 10)[1], truth) >= 0.95
    # Without the re-rank the codes alone rank worse: the re-rank is doing the work.
    _, codes_only = loaded.images.search(q, 10)
    assert knn_intersection_measure(codes_only, truth) < knn_intersection_measure(loaded.search(q, 10)[1], truth)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_the_floor_searched_in_the_built_index_equals_the_exact_floor(store, tmp_path, monkeypatch, kind):
    """A publish estimates the relevance floor by searching the index it just built (no second read of
    every vector): exactly the brute-force floor for an exact index, within a hair for compressed ones,
    from scratch and incrementally."""
    from indexer.floor_estimate import TOP, floor_of_top

    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "100000" if kind == "flat" else "2000")
    monkeypatch.setenv("GLIMPSE_PQ_MIN", "5000" if kind == "ivfpq" else "100000000")
    probes = clustered(40, seed=11)
    root = tmp_path / "index"

    def publish_with_floor() -> dict:
        d = IndexDir(root)
        v = d.publish_sources(
            StoreSource(store, "images", DIM, 1000),
            StoreSource(store, "captions", DIM, 1000),
            MANIFEST,
            floor=lambda search: floor_of_top(*search(probes, TOP)),
        )
        return json.loads((d.root / v / "manifest.json").read_text())

    def exact() -> float:
        return floor_of_top(*exact_top(store, probes, TOP))  # the probes' top scores by brute force

    vecs = clustered(8_000, seed=12)
    add_rows(store, vecs, 0)
    first, first_exact = publish_with_floor(), exact()
    closest = np.argsort(-(vecs @ probes.T).max(axis=1))[:2_000]  # the probes' best matches go
    delete(store, [int(i) + 1 for i in closest])  # ids start at 1
    add_rows(store, clustered(500, seed=13), 8_000)
    second, second_exact = publish_with_floor(), exact()
    assert second["built"]["images"] == "incremental"
    # the corpus change moved the floor (by twice the tolerance below): the incremental one must follow
    assert first_exact - second_exact > 0.01
    for m, want in ((first, first_exact), (second, second_exact)):
        assert m["index_type"]["type"] == kind
        if kind == "flat":
            assert m["floor"] == want
        else:
            assert abs(m["floor"] - want) < 0.005


FAILING_PUBLISH = textwrap.dedent("""
    import resource, signal, sys
    from indexer.publish import StoreSource
    from search.vectors.live import IndexDir
    from search.store.database import Store
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big write fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    store = Store(sys.argv[2])
    IndexDir(sys.argv[1]).publish_sources(
        StoreSource(store, "images", 64), StoreSource(store, "captions", 64), {"dim": 64, "fingerprint": "m1"}
    )
""")


def test_a_publish_failing_half_way_leaves_the_live_version_serving(store, tmp_path, monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "100000")
    add_rows(store, clustered(3000, seed=7), 0)
    root = tmp_path / "index"
    m1 = publish(store, root)
    before = hashes(root / m1["version"])
    add_rows(store, clustered(100, seed=8), 3000)
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_PUBLISH, str(root), str(tmp_path / "db.sqlite")],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "File too large" in proc.stderr  # a real write failure, mid-publish
    assert IndexDir(root).current_version() == m1["version"]
    assert hashes(root / m1["version"]) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # nothing half-written left behind
    loaded = IndexDir(root).load(use_gpu=False)
    assert loaded.images.ntotal == 3000
    # The next publish works, incrementally from the untouched live version.
    m2 = publish(store, root)
    assert m2["built"]["images"] == "incremental" and m2["images"] == 3100


def test_cli_reindex_updates_the_live_index_and_rebuilds_on_request(glimpse, home, tmp_path, tiny_model, image_factory):
    from search.paths import Paths

    photos = tmp_path / "photos"
    files = image_factory(photos, 6, size=(40, 40))
    glimpse("index", str(photos), "--model", tiny_model)
    image_factory(photos / "more", 2, size=(40, 40))
    files[0].unlink()
    glimpse("reindex")
    root = Paths.resolve(home).index
    d = IndexDir(root)

    def manifest() -> dict:
        return json.loads((root / d.current_version() / "manifest.json").read_text())

    assert manifest()["built"]["images"] == "incremental" and manifest()["images"] == 7
    glimpse("reindex", "--rebuild-index")
    assert manifest()["built"]["images"] == "from scratch" and manifest()["images"] == 7
    hits = json.loads(glimpse("search", "--image", str(files[3]), "-k", "1", "--json").stdout)
    assert hits[0]["path"] == str(files[3])


def test_the_publish_reads_ids_from_the_vector_seq_index_never_by_scanning_the_vectors(store):
    """At 10M rows a scan of ``images`` reads every vector (16 GB): the id snapshot and the changed ids
    must come from the ``vector_seq`` index (an ``ORDER BY id`` made SQLite scan the table instead)."""
    import sqlite3

    from sqlalchemy import event

    add_rows(store, clustered(300, seed=1), 0)
    _, mark = store.vector_ids("images")
    add_rows(store, clustered(10, seed=2), 300)
    statements: list[str] = []
    store.engine.dispose()  # new connections, each traced
    event.listen(store.engine, "connect", lambda con, _: con.set_trace_callback(statements.append))
    ids, _ = store.vector_ids("images")
    since = store.vector_ids_since("images", mark)
    assert np.array_equal(ids, np.arange(1, 311)) and np.array_equal(since, np.arange(301, 311))
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "images" in s]
    assert len(reads) >= 2
    plain = sqlite3.connect(store.engine.url.database)
    try:
        plans = {s: " | ".join(r[-1] for r in plain.execute("EXPLAIN QUERY PLAN " + s)) for s in reads}
    finally:
        plain.close()
    assert all("SCAN images" not in p and "ix_images_vector_seq" in p for p in plans.values()), plans
