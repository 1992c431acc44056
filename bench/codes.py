"""Which compressed code for the big index (issue 15): recall@10 against exact search as a function of the
re-rank depth, for PQ64 (today's), OPQ64+PQ64 and PQ128, on the scene mixture of bench/synth.py.

    python -m bench.codes --n 200000 --centres 100

At 10M images every re-ranked candidate is a random 1 KiB read when the float16 vectors are not in the
page cache, so a code that ranks better needs fewer reads for the same recall. ``--centres 100`` at 200k
gives each subject as many points (2,000, in 40 scenes) as the 10M home's 4,000 subjects: the
neighbourhoods a code must tell apart are as crowded as at 10M, which 200k points around 4,000 subjects
are not (there PQ64 reached 0.97 with 50 candidates, where the 10M home needs 400). Vectors are drawn as the
benchmark homes' (``Mixture.for_home``); queries are fresh draws; the truth is exact inner product over
the float32 vectors. The re-rank is exact (float32 here; the product re-ranks float16, which changes no
top-10 at this precision).
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from bench.synth import Mixture

CODES = {"PQ64": "IVF{nlist},PQ64", "OPQ64+PQ64": "OPQ64,IVF{nlist},PQ64", "PQ128": "IVF{nlist},PQ128"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--centres", type=int, default=100)
    ap.add_argument("--scene", type=int, default=50)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nprobe", type=int, default=8)
    ap.add_argument(
        "--nlist", type=int, default=256, help="lists (256 at 200k: ~780 points each, as 16,384 lists at 10M hold ~610)"
    )
    ap.add_argument("--depths", default="5,10,20,40", help="re-rank candidates per result (k=10)")
    ap.add_argument("--codes", default=",".join(CODES))
    args = ap.parse_args()

    mix = Mixture.for_home(7, args.centres, args.n, args.scene)
    xb = mix.draw(args.n, 0).astype(np.float32)
    xq = mix.draw(args.queries, 1).astype(np.float32)
    truth = faiss.knn(xq, xb, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    nlist = args.nlist
    rng = np.random.default_rng(0)
    train = xb[rng.choice(args.n, min(args.n, max(40 * nlist, 65_536)), replace=False)]
    depths = [int(d) for d in args.depths.split(",")]
    print(f"n={args.n:,} nlist={nlist} nprobe={args.nprobe} train={len(train):,} queries={args.queries}")
    print("| code | bytes/vector | train s | " + " | ".join(f"recall@10, {d * 10} re-ranked" for d in depths) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in depths) + " |")
    for name in args.codes.split(","):
        index = faiss.index_factory(xb.shape[1], CODES[name].format(nlist=nlist), faiss.METRIC_INNER_PRODUCT)
        # PQ trained as the product trains it (search/vectors/build.py)
        pq = faiss.downcast_index(faiss.extract_index_ivf(index)).pq
        pq.cp.niter, pq.cp.max_points_per_centroid = 10, 64
        t = time.perf_counter()
        index.train(train)
        train_s = time.perf_counter() - t
        index.add(xb)
        faiss.extract_index_ivf(index).nprobe = args.nprobe
        _, cand = index.search(xq, max(depths) * 10)
        recalls = []
        for d in depths:
            c = cand[:, : d * 10]
            scores = np.einsum("qd,qkd->qk", xq, xb[np.maximum(c, 0)])
            scores[c < 0] = -np.inf
            top = np.take_along_axis(c, np.argsort(-scores, axis=1)[:, :10], axis=1)
            recalls.append(np.mean([len(set(top[i]) & set(truth[i])) / 10 for i in range(len(xq))]))
        code_bytes = faiss.extract_index_ivf(index).code_size
        cells = " | ".join(f"{r:.3f}" for r in recalls)
        print(f"| {name} | {code_bytes} | {train_s:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
