#!/usr/bin/env python3
"""The query path alone, in-process: text and vector query p50 of an ``Engine`` on an existing home.

Run it in each tree to compare two versions without HTTP or a server's start-up in the figure (interleave
the runs: the machine is shared and noisy)::

    (cd /tmp/old && python /work/main/bench/query_path.py /tmp/old/bench-data/homes/synth-10000)
    (cd /tmp/new && python /work/main/bench/query_path.py /tmp/new/bench-data/homes/synth-10000)

It imports the tree it runs in (the working directory), so one copy of this script serves both. 120 fresh
text queries (``mode=images``, k=10) and 120 random unit vectors, after ``Engine.warm``, with FAISS threads
as a server sets them.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.getcwd())


def main(home: str) -> None:
    from search.engine import Engine
    from search.paths import Paths

    try:  # the trees before issue 25 had the query kinds in search.query and set FAISS threads in Engine
        from search.query.kinds import Filters, Paging, TextQuery, VectorQuery
        from search.vectors.live import configure_query_threads

        configure_query_threads()
    except ImportError:
        from search.query import Filters, Paging, TextQuery, VectorQuery  # type: ignore[no-redef]

    engine = Engine(Paths.resolve(home))
    engine.warm()
    live = engine.live() if hasattr(engine, "live") else engine._live()
    words = "red car beach dog cat sunset city mountain river tree house boat flower bird snow road bridge park".split()
    texts = [f"a photo of a {a} near a {b}" for a in words for b in words][:120]
    rng = np.random.default_rng(0)
    text_s, vector_s = [], []
    for text in texts:
        t0 = time.perf_counter()
        engine.search(TextQuery(text, mode="images"), Filters(), Paging(k=10))
        text_s.append(time.perf_counter() - t0)
        vec = rng.normal(size=live.dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        t0 = time.perf_counter()
        engine.search(VectorQuery(vec), Filters(), Paging(k=10))
        vector_s.append(time.perf_counter() - t0)
    print(
        f"{home}: text p50 {statistics.median(text_s) * 1000:.1f} ms, "
        f"vector p50 {statistics.median(vector_s) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1])
