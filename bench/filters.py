"""Filtered search and paging on a synthetic home (issue 15): latency by filter selectivity, recall, pages.

    python -m bench.filters [--n 100000] [--queries 30] [--flat-max 50000]
    python -m bench.filters --home bench-data/scale/home-10000000-c4000-s50   # a bench.publish_scale home

Builds (or reuses) ``bench-data/filters-<n>`` with bench/synth.py (or takes ``--home``), then lays its
rows out in folders by id (``/bench/g<i>/d<j>/``: a ``g`` folder holds 10% of the rows, a ``d`` folder
1%), so a folder filter keeps 0% (``/nowhere``), 1%, 10% or 100% of the collection. Folders are unrelated
to the vectors: the hardest case for an IVF with a selector (a real folder tends to share a topic).

Queries are raw vectors drawn from the collection's mixture (``VectorQuery``): no text encoder, so the
figures are the search itself (FAISS, the filter's SQL, hydration). Each query is a new vector, so its
ranking is never cached; a folder's id set is, after its first query ("cold" is that first one).
Recall@10 is against exact search over the stored vectors of the filtered rows, computed in one pass
streamed from the store (a 10M home never holds its vectors in memory).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

from bench.synth import DIM, STAMP, Mixture, synth_home

FOLDERS = {"0%": "/nowhere", "1%": "/bench/g0/d0000", "10%": "/bench/g0", "100%": "/bench"}
MTIME0 = 1.7e9  # bench/synth.py: row ``id`` has mtime MTIME0 + id - 1 (one second apart), no EXIF date
DAY = 86_400


def layout(db: Path, n: int) -> None:
    """Paths by id: folder ``g<i>`` holds the i-th tenth of the ids, ``d<j>`` the j-th hundredth."""
    con = sqlite3.connect(db)
    if not con.execute("SELECT path LIKE '/bench/%' FROM images ORDER BY id LIMIT 1").fetchone()[0]:
        tenth, hundredth = max(1, n // 10), max(1, n // 100)
        con.execute(
            "UPDATE images SET path = printf('/bench/g%d/d%04d/img_%08d.jpg', (id-1)/?, (id-1)/?, id-1)",
            (tenth, hundredth),
        )
        con.commit()
    con.close()


def cases(by: str, n: int) -> dict[str, tuple[dict, Callable[[np.ndarray], np.ndarray]]]:
    """Per share of the rows: the filter (``Filters`` fields) and which ids it keeps (vectorised)."""
    if by == "folder":
        out = {}
        for label, folder in FOLDERS.items():
            hi = {"0%": 0, "1%": max(1, n // 100), "10%": max(1, n // 10), "100%": n}[label]
            out[label] = ({"folder": folder}, lambda ids, hi=hi: (ids >= 1) & (ids <= hi))
        return out
    # By date (no rows rewritten: at 10M a folder layout rewrites every row, vectors included): whole days
    # of mtime from the first full day, as many as the share needs (rounded, at least one).
    first = int(MTIME0 // DAY) + 1
    out = {}
    for label, share in (("0%", 0.0), ("1%", 0.01), ("10%", 0.1), ("100%", 1.0)):
        if share == 0:
            days = (first - 9000, first - 8999)  # 1999: before every row
        elif share == 1:
            days = (first - 9000, first + n // DAY + 1)
        else:
            days = (first, first + max(1, round(share * n / DAY)) - 1)
        iso = [dt.datetime.fromtimestamp(d * DAY, dt.timezone.utc).date().isoformat() for d in days]
        out[label] = (
            {"date_from": iso[0], "date_to": iso[1]},
            lambda ids, a=days[0], b=days[1]: ((MTIME0 + ids - 1) // DAY >= a) & ((MTIME0 + ids - 1) // DAY <= b),
        )
    return out


def exact_filtered(store, queries: np.ndarray, keeps: dict[str, Callable], k: int = 10) -> dict[str, np.ndarray]:
    """Exact top-``k`` ids of each query within each filter's ids: one streamed pass over the vectors."""
    from search.store.schema import unit_f32

    heaps = {label: faiss.ResultHeap(len(queries), k, keep_max=True) for label in keeps}
    counts = dict.fromkeys(keeps, 0)
    for ids, v in store.iter_vectors("images", DIM, chunk=100_000):
        scores = queries @ unit_f32(v).T
        for label, heap in heaps.items():
            sel = keeps[label](ids)
            counts[label] += int(sel.sum())
            if sel.any():
                sc, sub = scores[:, sel], ids[sel]
                kk = min(k, len(sub))
                top = np.argpartition(-sc, kk - 1, axis=1)[:, :kk]
                heap.add_result(np.take_along_axis(sc, top, 1), sub[top])
    for heap in heaps.values():
        heap.finalize()
    return {label: heap.I for label, heap in heaps.items()}, counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--home", default=None, help="an existing synthetic home (its rows are laid out in folders)")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--by", choices=("folder", "date"), default="folder", help="filter on folders or on dates")
    ap.add_argument("--flat-max", type=int, default=50_000, help="GLIMPSE_FLAT_MAX: below n gives an IVF index")
    args = ap.parse_args()
    if args.home:
        home = Path(args.home)
        stamp = json.loads((home / STAMP).read_text())
    else:
        os.environ["GLIMPSE_FLAT_MAX"] = str(args.flat_max)
        home = Path("bench-data") / f"filters-{args.n}"
        stamp = synth_home(home, args.n)
    n = int(stamp["n"])
    t = time.perf_counter()
    if args.by == "folder":
        layout(home / "glimpse.db", n)
    shares = cases(args.by, n)
    mix = Mixture.for_home(stamp["seed"], stamp["centres"], n, stamp.get("scene", 0))
    print(f"home {home}: {n:,} rows (ready in {time.perf_counter() - t:.0f}s), load {os.getloadavg()}")

    from search.engine import Engine, Filters
    from search.paths import Paths
    from search.query.kinds import Paging, VectorQuery
    from search.store.database import Store
    from search.vectors.live import configure_query_threads

    paths = Paths.resolve(str(home))
    queries = mix.draw(args.queries, stream=20_000)
    store = Store(paths.db, upgrade=False)
    t = time.perf_counter()
    truth, counts = exact_filtered(store, queries, {label: keep for label, (_, keep) in shares.items()})
    store.close()
    print(f"exact filtered top-10 streamed in {time.perf_counter() - t:.0f}s")
    configure_query_threads()  # as a server has it (Engine construction no longer sets it)
    engine = Engine(paths)
    engine.search(VectorQuery(queries[0]), None, Paging(k=10))  # load the index
    print(f"index {engine.index.get().manifest.get('index_type')}")
    # As a running server has them (it reads them into the page cache once warm): the exact pass above just
    # pushed a 10M home's 10 GB of float16 re-rank vectors out of the page cache with 16 GB of database.
    live = engine.index.get()
    rerank = [p for r in (live.image_rerank, live.caption_rerank) if r is not None for p in r.vectors.paths]
    if rerank:
        from search.vectors.f16_files import prefetch

        t = time.perf_counter()
        got = prefetch(rerank)
        print(f"re-rank vectors in the page cache: {got / 2**30:.1f} GiB in {time.perf_counter() - t:.0f}s")

    def timed(f: Filters, q: np.ndarray, page: int = 0) -> tuple[float, list[int]]:
        t = time.perf_counter()
        got = engine.search(VectorQuery(q), f, Paging(k=10, page=page)).results
        return (time.perf_counter() - t) * 1000, [r.id for r in got]

    for q in mix.draw(30, stream=20_002):  # other queries first, as a server that has answered some
        timed(Filters(), q)
    base = statistics.median(timed(Filters(), q)[0] for q in queries)
    print(f"unfiltered p50 {base:.2f} ms")
    for label, (fields, _) in shares.items():
        f = Filters(**fields)
        cold, _ = timed(f, queries[0])
        times, hits, total, short = [], 0, 0, 0
        for j, q in enumerate(queries[1:], 1):
            ms, got = timed(f, q)
            times.append(ms)
            want = [int(i) for i in truth[label][j] if i >= 0]
            hits += len(set(got) & set(want))
            total += len(want)
            short += len(got) < len(want)
        p50 = statistics.median(times)
        recall = hits / total if total else 1.0
        print(
            f"{args.by} {label:>4} ({counts[label]:>8} rows, {fields}): p50 {p50:7.2f} ms"
            f" ({p50 / base:4.2f}x unfiltered), first (filter ids not yet kept) {cold:7.2f} ms,"
            f" recall@10 {recall:.3f}, short pages {short}"
        )
    first, later = [], []
    for q in mix.draw(args.queries, stream=20_001):  # new queries: nothing kept for them yet
        first.append(timed(Filters(), q)[0])
        later.extend(timed(Filters(), q, page)[0] for page in range(1, 5))
    p1, p25 = statistics.median(first), statistics.median(later)
    print(f"paging: page 1 p50 {p1:.2f} ms, pages 2..5 p50 {p25:.2f} ms ({100 * p25 / p1:.0f}% of page 1)")
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
