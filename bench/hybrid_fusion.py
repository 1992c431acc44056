"""Choose the hybrid fusion by measurement: vision only vs keywords only vs RRF vs score blends.

Held out: a sample of dev.jsonl images with two or more captions is copied to a scratch folder and
indexed with every caption but the FIRST (the primary one), which becomes the query. A query's
relevant images are those of its concept (dev.jsonl ``group``). Vision = the shipped model's ranking,
keywords = the FTS5 ranking (file names, folder names and the other captions), fused by
``fuse`` below (the product's blend is search.query.fusion). Prints recall@10 and MRR@100 for each.

    python -m bench.hybrid_fusion --n 600 --model local-dir:models/glimpse-icons-distil --work /tmp/hyb/bench
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

CORPORA = Path("/work/shared/data/corpora")
RRF_K = 60


def fuse(vision, keyword, method: str, alpha: float = 0.5) -> list[int]:
    """Ids best first. ``rrf``: sum of 1/(RRF_K + rank) over the lists holding the id. ``blend``: alpha *
    cosine min-max scaled over the vision list + (1 - alpha) * bm25 / the best bm25 (absent: 0)."""
    fused: dict[int, float] = defaultdict(float)
    if method == "rrf":
        for ranking in (vision, keyword):
            for rank, (i, _) in enumerate(ranking, start=1):
                fused[i] += 1.0 / (RRF_K + rank)
    else:
        if vision:
            lo, hi = min(s for _, s in vision), max(s for _, s in vision)
            for i, s in vision:
                fused[i] += alpha * ((s - lo) / (hi - lo) if hi > lo else 1.0)
        best = max((s for _, s in keyword), default=0.0)
        for i, s in keyword:
            fused[i] += (1.0 - alpha) * (s / best if best > 0 else 1.0)
    order = {i: n for n, i in enumerate([i for i, _ in vision] + [i for i, _ in keyword])}
    return sorted(fused, key=lambda i: (-fused[i], order[i]))


def keyword_ranking(store, plan, limit: int) -> list[tuple[int, float]]:
    """Weighted sum of each positive term's bm25, best first."""
    scores: dict[int, float] = defaultdict(float)
    for match, weight in plan.positive:
        for image_id, score in store.keyword_ranking(match, limit):
            scores[image_id] += weight * score
    return sorted(scores.items(), key=lambda p: -p[1])[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--model", default="local-dir:models/glimpse-icons-distil")
    ap.add_argument("--work", default="/tmp/glimpse-hybrid-bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep the index a previous run made in --work")
    args = ap.parse_args()

    from search.engine import Engine
    from search.paths import Paths
    from search.query.keywords import keyword_plan
    from search.query.kinds import TextQuery, parse_query
    from search.vectors.live import configure_query_threads

    recs = [json.loads(line) for line in open(CORPORA / "dev.jsonl")]
    recs = [r for r in recs if len(r["captions"]) >= 2]
    random.Random(args.seed).shuffle(recs)
    sample = recs[: args.n]
    work = Path(args.work)
    images = work / "images"
    if not args.reuse:
        index(work, images, sample, args.model)

    configure_query_threads()  # as a server has it (Engine construction no longer sets it)
    engine = Engine(Paths.resolve(str(work / "home")))
    store = engine.store
    group_of = {store.image_id_for_path(str(images / r["path"])): r["group"] for r in sample}
    live = engine.live()
    methods = ["vision", "keywords", "rrf", "blend 0.3", "blend 0.5", "blend 0.7"]
    recall: dict[str, list[float]] = defaultdict(list)
    mrr: dict[str, list[float]] = defaultdict(list)
    used_keywords = 0
    t = time.time()
    for r in sample:
        text = r["captions"][0]
        relevant = {i for i, g in group_of.items() if g == r["group"]}
        vec = engine.query_vector(TextQuery(text))
        scores, ids = live.images.search(vec[None, :], 100)
        vision = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        keyword = keyword_ranking(store, keyword_plan(parse_query(text)), 100)
        used_keywords += bool(keyword)
        ranked = {
            "vision": [i for i, _ in vision],
            "keywords": [i for i, _ in keyword],
            "rrf": fuse(vision, keyword, "rrf") if keyword else [i for i, _ in vision],
        }
        for a in (0.3, 0.5, 0.7):
            ranked[f"blend {a}"] = fuse(vision, keyword, "blend", a) if keyword else [i for i, _ in vision]
        for m in methods:
            ranks = [n for n, i in enumerate(ranked[m][:100], 1) if i in relevant]
            recall[m].append(1.0 if ranks and ranks[0] <= 10 else 0.0)
            mrr[m].append(1.0 / ranks[0] if ranks else 0.0)
    n = len(sample)
    print(f"{n} queries in {time.time() - t:.0f} s; {used_keywords} had a keyword match (auto mode fuses those)")
    print("| ranking | recall@10 | MRR@100 |\n|---|---:|---:|")
    for m in methods:
        print(f"| {m} | {sum(recall[m]) / n:.3f} | {sum(mrr[m]) / n:.3f} |")


def index(work: Path, images: Path, sample: list[dict], model: str) -> None:
    """Copy the sample and index it with every caption but the first (the held-out query)."""
    from indexer.pipeline import Options, run_job
    from search.paths import Paths

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    manifest = work / "captions.jsonl"
    with open(manifest, "w") as f:
        for r in sample:
            dst = images / r["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CORPORA / r["path"], dst)
            f.write(json.dumps({"path": str(dst), "captions": r["captions"][1:]}) + "\n")
    t = time.time()
    run_job(Paths.resolve(str(work / "home")), [str(images)], Options(model=model, workers=0, captions=str(manifest)))
    print(f"indexed {len(sample)} images in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
