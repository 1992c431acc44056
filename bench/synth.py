"""Synthetic Glimpse homes for scale benchmarks: rows + vectors + a published index.

Embedding a million images is out of reach on a CPU, and search cost does not
depend on where the vectors came from, so large homes are written directly:
image rows (real tiny files, or made-up paths) with float16 vectors in the
database, the model row of the random ViT-B-32 the server will load, and an
index published through Glimpse's own ``IndexDir.publish`` (so the index type,
nlist and nprobe are the ones Glimpse chooses for that size).

Vectors are not uniform on the sphere (IVF has nothing to cluster there and
recall would say nothing about real data): they are a two-level Gaussian
mixture, 50 "themes" × 20 "subjects" each, a point lying at cosine ≈ 0.75 to
its subject, roughly how CLIP neighbourhoods in a photo collection look.
Queries for recall are fresh draws from the same mixture (not database points).
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

from search.model_spec import ModelSpec

DIM = 512
STAMP = "bench-stamp.json"
MODEL = ModelSpec.parse("ViT-B-32", "none")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Mixture:
    def __init__(self, seed: int, dim: int = DIM, themes: int = 50, per_theme: int = 20):
        rng = np.random.default_rng([seed, 1])
        theme = _unit(rng.standard_normal((themes, dim)))
        sub = theme.repeat(per_theme, 0) + 0.8 * _unit(rng.standard_normal((themes * per_theme, dim)))
        self.centers = _unit(sub)
        self.seed, self.dim = seed, dim

    def draw(self, n: int, stream: int, noise: float = 0.9) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 2, stream])
        c = self.centers[rng.integers(0, len(self.centers), n)]
        return _unit(c + noise * _unit(rng.standard_normal((n, self.dim))))


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


def synth_home(home: Path, n: int, seed: int = 7, files_root: Path | None = None, log=print) -> dict:
    """Create (or reuse) a home with ``n`` indexed images. Returns build info."""
    home = Path(home)
    stamp_path = home / STAMP
    want = {
        "n": n,
        "seed": seed,
        "files_root": str(Path(files_root).resolve()) if files_root else None,
        "schema": _schema_key(),
        "v": 1,
    }
    if stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if all(stamp.get(k) == v for k, v in want.items()) and (home / "index" / "current").exists():
            return stamp
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    from search.index import IndexDir
    from search.paths import Paths
    from search.store import Store

    paths = Paths.resolve(home)
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

    mix = Mixture(seed)
    t0 = time.perf_counter()
    con = sqlite3.connect(paths.db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        vecs = mix.draw(m, stream=start // chunk).astype(np.float16)
        rows = []
        for j in range(m):
            i = start + j
            if entries is not None:
                path, size, mtime = entries[i]
            else:
                path, size, mtime = f"{root_path}/d{i // 1000:04d}/img_{i:07d}.jpg", 2_000_000 + i, 1.7e9 + i
            rows.append(
                (i + 1, root_id, path, size, mtime, f"{i:032x}", 4032, 3024, "JPEG", "indexed", vecs[j].tobytes(), now)
            )
        con.executemany(
            "INSERT INTO images (id, root_id, path, size, mtime, content_hash, width, height, format, status, vector,"
            " indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    t_rows = time.perf_counter() - t0
    log(f"  wrote {n:,} rows in {t_rows:.1f}s")

    # Publish exactly as the indexer does: read the stored vectors back, let Glimpse choose the index.
    t0 = time.perf_counter()
    store = Store(paths.db)
    vecs, ids = store.image_vectors(DIM)
    cvecs, cids = store.caption_vectors(DIM)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    version = IndexDir(paths.index).publish(
        vecs,
        ids,
        cvecs,
        cids,
        {"model": MODEL.name, "pretrained": MODEL.pretrained, "fingerprint": MODEL.fingerprint(), "dim": DIM},
    )
    t_pub = time.perf_counter() - t0
    store.close()
    manifest = json.loads((paths.index / version / "manifest.json").read_text())
    log(f"  published {manifest['index_type']} in {t_pub:.1f}s (read vectors {t_read:.1f}s)")
    stamp = dict(
        want,
        index_type=manifest["index_type"],
        rows_s=round(t_rows, 1),
        read_vectors_s=round(t_read, 1),
        publish_s=round(t_pub, 1),
    )
    stamp_path.write_text(json.dumps(stamp, indent=2))
    return stamp


def recall_at_10(home: Path, seed: int = 7, queries: int = 200) -> dict:
    """recall@10 of the published index vs exact inner-product search over the stored vectors."""
    import faiss
    from faiss.contrib.evaluation import knn_intersection_measure

    from search.index import IndexDir
    from search.paths import Paths
    from search.store import Store

    paths = Paths.resolve(home)
    live = IndexDir(paths.index).load(use_gpu=False)
    store = Store(paths.db, upgrade=False)
    vecs, ids = store.image_vectors(DIM)
    store.close()
    q = Mixture(seed).draw(queries, stream=10_000)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vecs)
    _, pos = exact.search(q, 10)
    truth = ids[pos]
    _, got = live.images.search(q, 10)
    single = []
    for row in q[:50]:
        t0 = time.perf_counter()
        live.images.search(row[None, :], 10)
        single.append((time.perf_counter() - t0) * 1000)
    # The same figure with the database's own points as queries (how Glimpse tunes nprobe).
    dq = vecs[np.random.default_rng(3).choice(len(vecs), size=min(queries, len(vecs)), replace=False)]
    _, pos2 = exact.search(dq, 10)
    _, got2 = live.images.search(dq, 10)
    return {
        "recall": knn_intersection_measure(got, truth),
        "recall_db_points": knn_intersection_measure(got2, ids[pos2]),
        "faiss_ms_p50": float(np.median(single)),
        "index_type": live.manifest.get("index_type"),
    }
