"""Filtered search and paging on a synthetic home (issue 15): latency by filter selectivity, recall, pages.

    python -m bench.filters [--n 100000] [--queries 30] [--flat-max 50000]

Builds (or reuses) ``bench-data/filters-<n>`` with bench/synth.py, then lays its rows out in folders
(``/bench/g<i>/d<j>/``: a ``g`` folder holds 10% of the rows, a ``d`` folder 1%), so a folder filter
keeps 0% (``/nowhere``), 1%, 10% or 100% of the collection. Folders are unrelated to the vectors: the
hardest case for an IVF with a selector (a real folder tends to share a topic).

Queries are raw vectors drawn from the collection's mixture (``VectorQuery``): no text encoder, so the
figures are the search itself (FAISS, the filter's SQL, hydration). Each query is a new vector, so its
ranking is never cached; a folder's id set is, after its first query ("cold" is that first one).
Recall@10 is against exact search over the stored vectors of the filtered rows.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import time
from pathlib import Path

import numpy as np

from bench.synth import DIM, Mixture, synth_home

FOLDERS = {"0%": "/nowhere", "1%": "/bench/g0/d0000", "10%": "/bench/g0", "100%": "/bench"}


def layout(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE images SET path = printf('/bench/g%d/d%04d/img_%07d.jpg', (id-1)/10000, (id-1)/1000, id-1)")
    con.commit()
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--flat-max", type=int, default=50_000, help="GLIMPSE_FLAT_MAX: below n gives an IVF index")
    args = ap.parse_args()
    os.environ["GLIMPSE_FLAT_MAX"] = str(args.flat_max)
    home = Path("bench-data") / f"filters-{args.n}"
    stamp = synth_home(home, args.n)
    layout(home / "glimpse.db")
    print(f"home {home}: {args.n:,} rows, index {stamp['index_type']}, load {os.getloadavg()}")

    from search.engine import Engine, Filters
    from search.paths import Paths
    from search.query import Paging, VectorQuery
    from search.store import Store

    paths = Paths.resolve(str(home))
    store = Store(paths.db)
    vecs, ids = store.image_vectors(DIM)
    store.close()
    queries = Mixture(7).draw(args.queries, stream=20_000)
    engine = Engine(paths)
    engine.search(VectorQuery(queries[0]), None, Paging(k=10))  # load the index

    def timed(f: Filters, q: np.ndarray, page: int = 0) -> tuple[float, list[int]]:
        t = time.perf_counter()
        got = engine.search(VectorQuery(q), f, Paging(k=10, page=page)).results
        return (time.perf_counter() - t) * 1000, [r.id for r in got]

    base = statistics.median(timed(Filters(), q)[0] for q in queries)
    print(f"unfiltered p50 {base:.2f} ms")
    paths_of = dict(zip(*_paths(paths.db)))
    for label, folder in FOLDERS.items():
        f = Filters(folder=folder)
        cold, _ = timed(f, queries[0])
        times, hits, total, short = [], 0, 0, 0
        prefix = folder.rstrip("/") + "/"
        mask = np.array([paths_of[int(i)].startswith(prefix) for i in ids])
        for q in queries[1:]:
            ms, got = timed(f, q)
            times.append(ms)
            sub = ids[mask]
            truth = sub[np.argsort(-(vecs[mask] @ q))[:10]] if mask.any() else sub
            hits += len(set(got) & set(truth.tolist()))
            total += len(truth)
            short += len(got) < len(truth)
        p50 = statistics.median(times)
        recall = hits / total if total else 1.0
        print(
            f"folder {label:>4} ({int(mask.sum()):>6} rows): p50 {p50:7.2f} ms ({p50 / base:4.2f}x unfiltered),"
            f" first (filter ids not yet kept) {cold:7.2f} ms, recall@10 {recall:.3f}, short pages {short}"
        )
    first, later = [], []
    for q in Mixture(7).draw(args.queries, stream=20_001):  # new queries: nothing kept for them yet
        first.append(timed(Filters(), q)[0])
        later.extend(timed(Filters(), q, page)[0] for page in range(1, 5))
    p1, p25 = statistics.median(first), statistics.median(later)
    print(f"paging: page 1 p50 {p1:.2f} ms, pages 2..5 p50 {p25:.2f} ms ({100 * p25 / p1:.0f}% of page 1)")
    print(f"load after {os.getloadavg()}")


def _paths(db: Path) -> tuple[list[int], list[str]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, path FROM images").fetchall()
    con.close()
    return [r[0] for r in rows], [r[1] for r in rows]


if __name__ == "__main__":
    main()
