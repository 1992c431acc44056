"""Issue 15 (incremental publish at 10M): a compact index's float16 re-rank vectors are shared
between versions by hard links, an incremental publish writes only the vectors it adds, dead rows
are compacted away in time, and every id always re-ranks against its own stored vector."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import faiss
import numpy as np
import pytest

import search.vectors.versions as index_files
from search.store.database import Store
from search.vectors.build import _shares, build_streamed, two_level_centroids
from search.vectors.f16_files import F16Rows, F16Writer, rows_map_path
from search.vectors.live import IndexDir
from test_index_types import DIM, clustered, normalise
from test_publish_stream import add_rows, delete, publish, reembed


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    yield s
    s.close()


@pytest.fixture
def pq(monkeypatch):
    monkeypatch.setenv("GLIMPSE_FLAT_MAX", "2000")
    monkeypatch.setenv("GLIMPSE_PQ_MIN", "5000")


def stored_f16(store: Store) -> tuple[np.ndarray, np.ndarray]:
    parts = list(store.iter_vectors("images", DIM))
    return np.concatenate([i for i, _ in parts]), np.concatenate([v for _, v in parts])


def assert_rows_are_the_stored_vectors(root, store: Store) -> None:
    """Every indexed id's re-rank row is, bit for bit, the float16 vector the store holds for it."""
    loaded = IndexDir(root).load(use_gpu=False)
    ids, vecs = stored_f16(store)
    assert np.array_equal(loaded.image_rerank.ids, ids)
    assert np.array_equal(loaded.image_rerank.vectors.take(np.arange(len(ids))), vecs)


def inode(path) -> int:
    return os.stat(path).st_ino


def test_an_incremental_publish_links_the_live_vectors_and_writes_only_the_added_ones(store, tmp_path, pq):
    pool = clustered(9_000, seed=3)
    add_rows(store, pool[:8_000], 0)
    root = tmp_path / "index"
    m1 = publish(store, root)
    v1 = root / m1["version"]
    assert m1["index_type"]["f16_files"] == ["images.f16.npy"] and not rows_map_path(v1, "images").exists()

    delete(store, list(range(1, 8_000, 40)))
    add_rows(store, pool[8_000:8_300], 8_000)
    changed = list(range(3, 8_000, 50))
    reembed(store, changed, clustered(len(changed), seed=9))
    m2 = publish(store, root)
    v2 = root / m2["version"]
    files = m2["index_type"]["f16_files"]
    assert m2["built"]["images"] == "incremental" and files == ["images.f16.npy", f"images.f16.{m2['version']}.npy"]
    # The live version's vectors are the same file (a link), not a copy; the new segment holds the
    # 300 added and 160 re-embedded rows only.
    assert inode(v2 / "images.f16.npy") == inode(v1 / "images.f16.npy")
    assert F16Rows([v2 / files[1]]).total == 300 + len(changed)
    assert_rows_are_the_stored_vectors(root, store)

    # A third version chains a third segment; pruning the first keeps the linked file readable.
    add_rows(store, pool[8_300:8_400], 9_000)
    m3 = publish(store, root)
    assert len(m3["index_type"]["f16_files"]) == 3
    IndexDir(root).prune(keep=1)
    assert not v1.exists() and not v2.exists()
    assert_rows_are_the_stored_vectors(root, store)
    q = clustered(100, seed=4)
    scores, ids = IndexDir(root).load(use_gpu=False).search(q, 10)
    vecs, all_ids = store.image_vectors(DIM)
    exact = vecs[np.searchsorted(all_ids, ids)]  # the re-ranked scores are the stored vectors' exact cosines
    assert np.allclose(scores, np.einsum("qd,qkd->qk", q, exact), atol=1e-5)


def test_dead_rows_are_compacted_into_one_segment(store, tmp_path, pq, monkeypatch, caplog):
    add_rows(store, clustered(8_000, seed=5), 0)
    root = tmp_path / "index"
    publish(store, root)
    delete(store, list(range(1, 8_000, 10)))  # 800 dead rows: 11% of the live ones
    monkeypatch.setattr(index_files, "DEAD_SHARE", 0.5)
    m2 = publish(store, root)
    assert len(m2["index_type"]["f16_files"]) == 1 and rows_map_path(root / m2["version"], "images").exists()
    assert_rows_are_the_stored_vectors(root, store)

    monkeypatch.setattr(index_files, "DEAD_SHARE", 0.1)
    add_rows(store, clustered(50, seed=6), 8_000)
    with caplog.at_level(logging.INFO, logger="search.vectors.live"):
        m3 = publish(store, root)
    v3 = root / m3["version"]
    assert m3["built"]["images"] == "incremental" and m3["index_type"]["f16_files"] == ["images.f16.npy"]
    assert not rows_map_path(v3, "images").exists() and F16Rows([v3 / "images.f16.npy"]).total == 8_000 - 800 + 50
    assert inode(v3 / "images.f16.npy") != inode(root / m2["version"] / "images.f16.npy")
    assert "compacted" in caplog.text
    assert_rows_are_the_stored_vectors(root, store)


def test_a_writer_never_writes_through_an_existing_name(tmp_path):
    (tmp_path / "live.npy").write_bytes(b"live")
    os.link(tmp_path / "live.npy", tmp_path / "next.npy")
    with pytest.raises(FileExistsError):
        F16Writer(tmp_path / "next.npy", 1, DIM)
    assert (tmp_path / "live.npy").read_bytes() == b"live"


@pytest.mark.parametrize("sizes,k", [([5000, 3, 0, 1, 997], 64), ([10, 10, 10], 30), ([1, 1, 98], 3), ([7], 7)])
def test_centroid_shares_give_every_cluster_one_to_its_size_and_sum_to_k(sizes, k):
    sizes = np.array(sizes)
    share = _shares(sizes, k)
    assert share.sum() == k
    assert np.all(share[sizes > 0] >= 1) and np.all(share <= sizes) and np.all(share[sizes == 0] == 0)


def test_two_level_clustering_survives_a_tiny_coarse_cluster():
    # 15 tight groups of 600 and one of 3 points: a proportional split gives the small one no
    # centroid at all (faiss.contrib's two_level_clustering then fails); here it gets one.
    rng = np.random.default_rng(0)
    centres = normalise(rng.standard_normal((16, DIM)))
    counts = [600] * 15 + [3]
    x = normalise(np.repeat(centres, counts, 0) + 0.05 * rng.standard_normal((sum(counts), DIM)) / np.sqrt(DIM))
    c = two_level_centroids(x.astype(np.float32), 256)
    assert c.shape == (256, DIM) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    assert (x[-3:] @ c.T).max() > 0.99  # the small group has a centroid of its own


def test_nprobe_tuning_stops_where_more_lists_gain_nothing_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr("search.vectors.build.TARGET_RECALL", 1.01)  # unreachable: recall levels off below it
    x = clustered(20_000, seed=7)
    spec = {"type": "ivf", "nlist": 256, "codec": "SQ8"}
    with caplog.at_level(logging.WARNING, logger="search.vectors.live"):
        built = build_streamed([(np.arange(len(x)), x)], len(x), DIM, spec, sample=lambda m: x[:m])
    assert 1 <= built.spec["nprobe"] < 256  # not every list, as the first 10M build did
    assert faiss.extract_index_ivf(built.index).nprobe == built.spec["nprobe"]
    assert "not reached" in caplog.text and "more lists gain nothing" in caplog.text


def _cached_bytes(path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], capture_output=True)
    return int(out.stdout.split()[0])


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_prefetch_puts_the_files_in_the_page_cache_while_they_fit(tmp_path):
    """The bytes land in the page cache, not just a request for them: posix_fadvise(WILLNEED), which
    the server used first, is capped per call by the kernel and left 10 GB at 10M almost uncached."""
    from search.vectors.f16_files import looks_cached, prefetch

    paths = []
    for i in range(2):
        # 3 MB each: posix_fadvise(WILLNEED) asked for them and returned with them not yet (or never) cached
        w = F16Writer(tmp_path / f"s{i}.npy", 24_000, DIM)
        w.write(np.ones((24_000, DIM), np.float16))
        w.close()
        paths.append(tmp_path / f"s{i}.npy")
    total = sum(p.stat().st_size for p in paths)
    for p in paths:  # out of the page cache (written pages are dropped once on disk)
        with open(p, "rb") as f:
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    fincore = shutil.which("fincore") is not None and _cached_bytes(paths[0]) < 4096 * 16
    # nothing fits: nothing read (counted by the kernel: the bytes of this process's read calls, of which
    # /proc/meminfo's are some; not the page cache's state: a probe of an uncached page starts read-ahead)
    before = _rchar()
    assert prefetch(paths, share_of_free=0.0) == 0
    assert _rchar() - before < total // 4
    assert prefetch(paths) == total
    if fincore:  # util-linux, and a filesystem that dropped the pages when asked (tmpfs keeps them)
        assert all(_cached_bytes(p) >= p.stat().st_size for p in paths)  # whole pages
        with open(paths[0], "rb") as f:
            assert looks_cached(f.fileno(), 0, paths[0].stat().st_size) == hasattr(os, "RWF_NOWAIT")
    assert prefetch(paths) == total  # cached: counted, not read again
    assert prefetch([tmp_path / "gone.npy"]) == 0
