"""Synthetic Glimpse homes for scale benchmarks: rows + vectors + a published index.

Embedding a million images is out of reach on a CPU, and search cost does not
depend on where the vectors came from, so large homes are written directly:
image rows (real tiny files, or made-up paths) with float16 vectors in the
database, the model row of the random ViT-B-32 the server will load, and an
index published through Glimpse's own ``IndexDir.publish`` (so the index type,
nlist and nprobe are the ones Glimpse chooses for that size).

Vectors are not uniform on the sphere (IVF has nothing to cluster there and
recall would say nothing about real data): they are a two-level Gaussian
mixture, 50 "themes" × 20 "subjects" each (``centres`` subjects in all), a point
lying at cosine ≈ 0.75 to its subject, roughly how CLIP neighbourhoods in a
photo collection look. Queries for recall are fresh draws from the same mixture
(not database points).

Rows are written and published in chunks (float16 vectors straight into SQLite,
the index streamed back out of it), so a 10M home never holds 10M float32
vectors: ``python -m bench.synth --n 10000000`` (cached under ``bench-data/``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from search.encoders.model_spec import ModelSpec

DIM = 512
STAMP = "bench-stamp.json"
MODEL = ModelSpec.parse("ViT-B-32", "none")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Mixture:
    def __init__(
        self, seed: int, dim: int = DIM, themes: int = 50, per_theme: int = 20, scenes: int = 0, noise: float = 0.9
    ):
        """``themes * per_theme`` subject centres on the unit sphere; with ``scenes``, that many scene
        centres around the subjects, each point then lying close to one scene."""
        rng = np.random.default_rng([seed, 1])
        theme = _unit(rng.standard_normal((themes, dim)))
        sub = theme.repeat(per_theme, 0) + 0.8 * _unit(rng.standard_normal((themes * per_theme, dim)))
        self.centers = _unit(sub)
        self.seed, self.dim, self.noise = seed, dim, noise
        self.scale: np.ndarray | None = None
        if scenes:
            # A third level, so a point has a few dozen true near neighbours (as a photo has its burst, its
            # near-copies, its same-place shots) among a subject's thousands: with one level of noise 0.9
            # in 512 dims, a query's top-10 at 10M were ten of ~2,500 points within ~0.005 cosine of each
            # other, which no compact code can order and no partition separates (the publish tuned nprobe
            # to nlist). Scenes sit at cosine ~0.96 to their subject and points at 0.86-0.96 to their scene
            # (the spread varies per scene), so neighbourhoods overlap and cross list boundaries: on 200k
            # points with 50 scenes per subject (as at 10M), IVF-PQ recall@10 was 0.73 at nprobe 1, 0.92 at
            # 4, 0.97 at 8, the shape real CLIP embeddings give.
            srng = np.random.default_rng([seed, 3])
            owner = srng.integers(0, len(self.centers), scenes)
            self.centers = _unit(self.centers[owner] + 0.3 * _unit(srng.standard_normal((scenes, dim))))
            self.scale = srng.uniform(0.3, 0.6, scenes).astype(np.float32)

    @classmethod
    def for_home(cls, seed: int, centres: int, n: int, scene: int) -> Mixture:
        """The mixture of a synthetic home: ``centres`` subjects and, with ``scene`` > 0, ``n // scene``
        scenes (about ``scene`` points each, at any corpus size)."""
        return cls(seed, per_theme=max(1, centres // 50), scenes=n // scene if scene else 0)

    def draw(self, n: int, stream: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 2, stream])
        pick = rng.integers(0, len(self.centers), n)
        noise = self.noise if self.scale is None else self.scale[pick][:, None]
        return _unit(self.centers[pick] + noise * _unit(rng.standard_normal((n, self.dim))))


def tiny_tree(root: Path, n: int, per_dir: int = 1000) -> Path:
    """``n`` tiny distinct JPEG files under ``root`` (for scan/diff timing)."""
    from PIL import Image

    marker = root / f".complete-{n}"
    if marker.exists():
        return root
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 140, 160)).save(buf, "JPEG", quality=50)
    template = buf.getvalue()
    for i in range(n):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        with open(d / f"img_{i:07d}.jpg", "wb") as f:
            f.write(template + f"#{i}".encode())  # bytes after EOI: ignored by decoders, distinct hashes
    marker.write_text("ok")
    return root


def _schema_key() -> str:
    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    h = hashlib.sha1()
    for p in sorted(versions.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def synth_home(
    home: Path, n: int, seed: int = 7, files_root: Path | None = None, log=print, centres: int = 1000
) -> dict:
    """Create (or reuse) a home with ``n`` indexed images. Returns build info."""
    stamp = synth_rows(home, n, seed, files_root, log, centres)
    if "index_type" in stamp and (Path(home) / "index" / "current").exists():
        return stamp
    t0 = time.perf_counter()
    version = publish_home(home)
    t_pub = time.perf_counter() - t0
    manifest = json.loads((Path(home) / "index" / version / "manifest.json").read_text())
    log(f"  published {manifest['index_type']} in {t_pub:.1f}s")
    stamp = dict(stamp, index_type=manifest["index_type"], publish_s=round(t_pub, 1))
    (Path(home) / STAMP).write_text(json.dumps(stamp, indent=2))
    return stamp


def publish_home(home: Path, rebuild: bool = False) -> str:
    """Publish exactly as the indexer does: vectors streamed from the store, Glimpse chooses the index."""
    from indexer.publish import StoreSource
    from search.paths import Paths
    from search.store.database import Store
    from search.vectors.live import IndexDir

    paths = Paths.resolve(home)
    store = Store(paths.db, upgrade=False)
    try:
        return IndexDir(paths.index).publish_sources(
            StoreSource(store, "images", DIM),
            StoreSource(store, "captions", DIM),
            {"model": MODEL.name, "pretrained": MODEL.pretrained, "fingerprint": MODEL.fingerprint(), "dim": DIM},
            rebuild=rebuild,
        )
    finally:
        store.close()


def synth_rows(
    home: Path, n: int, seed: int = 7, files_root: Path | None = None, log=print, centres: int = 1000, scene: int = 0
) -> dict:
    """Create (or reuse) a home with ``n`` image rows and their float16 vectors (no index)."""
    home = Path(home)
    stamp_path = home / STAMP
    want = {
        "n": n,
        "seed": seed,
        "files_root": str(Path(files_root).resolve()) if files_root else None,
        "schema": _schema_key(),
        "centres": centres,
        "v": 2,
    }
    if scene:
        want["scene"] = scene  # only when set: homes cached before scenes existed stay valid
    from search.paths import Paths
    from search.store.database import Store

    paths = Paths.resolve(home)
    mix = Mixture.for_home(seed, centres, n, scene)
    if stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if all(stamp.get(k) == v for k, v in want.items()):
            if not stamp.get("partial"):
                return stamp
            if files_root is None:
                # A run killed while writing rows: go on after the last committed chunk (each chunk's vectors
                # come from its own seeded stream, so the result is the same as one straight run).
                done = int(stamp["rows_done"])
                log(f"  resuming after {done:,} rows")
                t0 = time.perf_counter() - float(stamp.get("rows_s") or 0)
                on_commit = _checkpoint(stamp_path, stamp, t0, done)
                root_id, root_path = stamp["root_id"], stamp["root_path"]
                insert_rows(paths.db, mix, done, n - done, root_id, root_path, None, done // ROWS_CHUNK, log, on_commit)
                return _finish_rows(stamp_path, want, t0, log, n)
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    store = Store(paths.db)  # Alembic upgrade to head: the real schema
    store.set_model(MODEL.name, MODEL.pretrained, MODEL.fingerprint(), DIM)
    if files_root is not None:
        from indexer.scan import walk_images

        entries = [(e.path, e.size, e.mtime) for e in walk_images(str(files_root))]
        if len(entries) != n:
            raise RuntimeError(f"{files_root} holds {len(entries)} images, expected {n}")
        root_path = str(Path(files_root).resolve())
    else:
        root_path = f"/synthetic/{n}"
        entries = None
    root_id = store.ensure_root(root_path)
    store.close()

    t0 = time.perf_counter()
    partial = dict(want, partial=True, rows_done=0, root_id=root_id, root_path=root_path)
    on_commit = _checkpoint(stamp_path, partial, t0)
    insert_rows(paths.db, mix, 0, n, root_id, root_path, entries, log=log, on_commit=on_commit)
    return _finish_rows(stamp_path, want, t0, log, n)


def _checkpoint(stamp_path: Path, partial: dict, t0: float, first: int = 0):
    """After each committed chunk: a stamp saying how far the rows got (big homes take an hour)."""

    def done(rows: int) -> None:
        tmp = stamp_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(partial, rows_done=first + rows, rows_s=round(time.perf_counter() - t0, 1))))
        tmp.replace(stamp_path)

    return done


def _finish_rows(stamp_path: Path, want: dict, t0: float, log, n: int) -> dict:
    t_rows = time.perf_counter() - t0
    log(f"  wrote {n:,} rows in {t_rows:.1f}s")
    stamp = dict(want, rows_s=round(t_rows, 1))
    stamp_path.write_text(json.dumps(stamp, indent=2))
    return stamp


ROWS_CHUNK = 100_000


def insert_rows(
    db: Path,
    mix: Mixture,
    first: int,
    n: int,
    root_id: int,
    root_path: str,
    entries=None,
    stream0: int = 0,
    log=print,
    on_commit=None,
) -> None:
    """Rows ``first+1 .. first+n`` with float16 mixture vectors, ``ROWS_CHUNK`` per transaction (never all
    in RAM); ``on_commit(rows)`` after each. ``entries[j]``: the file of row ``first+1+j``."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    seq = (con.execute("SELECT max(vector_seq) FROM images").fetchone()[0] or 0) + 1
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    chunk = ROWS_CHUNK
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        vecs = mix.draw(m, stream=stream0 + start // chunk).astype(np.float16)
        rows = []
        for j in range(m):
            i = first + start + j
            if entries is not None:
                path, size, mtime = entries[start + j]
            else:
                path, size, mtime = f"{root_path}/d{i // 1000:04d}/img_{i:07d}.jpg", 2_000_000 + i, 1.7e9 + i
            meta = (f"{i:032x}", 4032, 3024, "JPEG", "indexed")
            rows.append((i + 1, root_id, path, size, mtime, *meta, vecs[j].tobytes(), seq, now))
        con.executemany(
            "INSERT INTO images (id, root_id, path, size, mtime, content_hash, width, height, format, status, vector,"
            " vector_seq, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        con.commit()
        if on_commit is not None:
            on_commit(start + m)
        if n > 1_000_000 and (start // chunk) % 10 == 9:
            log(f"  {start + m:,} rows ({time.perf_counter() - t0:.0f}s)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def exact_top(db: Path, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact inner-product top-``k`` ids over every stored vector, streamed in chunks (brute force)."""
    import faiss

    from search.store.database import Store
    from search.store.schema import unit_f32

    store = Store(db, upgrade=False)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    try:
        for ids, v in store.iter_vectors("images", DIM, chunk=100_000):
            scores = q @ unit_f32(v).T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            heap.add_result(np.take_along_axis(scores, top, 1), ids[top])
    finally:
        store.close()
    heap.finalize()
    return heap.I


def recall_at_10(home: Path, queries: int = 200) -> dict:
    """recall@10 of the published index vs exact inner-product search over the stored vectors."""
    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure

    from search.paths import Paths
    from search.vectors.live import IndexDir

    paths = Paths.resolve(home)
    live = IndexDir(paths.index).load(use_gpu=False)
    assert live is not None
    stamp = json.loads((Path(home) / STAMP).read_text())  # the mixture the home was drawn from
    mix = Mixture.for_home(stamp["seed"], stamp["centres"], stamp["n"], stamp.get("scene", 0))
    q = mix.draw(queries, stream=10_000)
    _, got = live.search(q, 10)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # the per-query figure is single-threaded
    single = []
    try:
        for row in q[:50]:
            t0 = time.perf_counter()
            live.search(row[None, :], 10)
            single.append((time.perf_counter() - t0) * 1000)
    finally:
        faiss.omp_set_num_threads(threads)
    # The same figure with the database's own points as queries (how Glimpse used to tune nprobe).
    from search.store.database import Store
    from search.store.schema import unit_f32

    store = Store(paths.db, upgrade=False)
    all_ids, _ = store.vector_ids("images")
    pick = np.sort(np.random.default_rng(3).choice(all_ids, size=min(queries, len(all_ids)), replace=False))
    dq = np.concatenate([unit_f32(v) for _, v in store.iter_vectors("images", DIM, pick)])
    store.close()
    _, got2 = live.search(dq, 10)
    return {
        "recall": knn_intersection_measure(got, exact_top(paths.db, q)),
        "recall_db_points": knn_intersection_measure(got2, exact_top(paths.db, dq)),
        "faiss_ms_p50": float(np.median(single)),
        "index_type": live.manifest.get("index_type"),
    }


def upgrade_home(home: Path, log=print) -> None:
    """Bring a cached home's database to the head migration, as Glimpse does for a user's home, and stamp
    it with the new schema key, so a migration does not throw away homes that took an hour to build (10M)."""
    from search.paths import Paths
    from search.store.database import Store

    stamp_path = Path(home) / STAMP
    stamp = json.loads(stamp_path.read_text())
    if stamp.get("schema") == _schema_key():
        return
    t0 = time.perf_counter()
    Store(Paths.resolve(home).db).close()  # upgrades to head
    stamp["schema"] = _schema_key()
    stamp_path.write_text(json.dumps(stamp, indent=2))
    log(f"  {home}: upgraded to the head migration in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["--upgrade"] or len(sys.argv) < 3:
        sys.exit("usage: python -m bench.synth --upgrade HOME [HOME ...]   (cached homes to the head migration)")
    for h in sys.argv[2:]:
        upgrade_home(Path(h))
