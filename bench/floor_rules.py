"""Which relevance floor: how often a query about something absent returns anything above it, against
how many true matches stay above it (``min_score=auto``).

Two kinds of gallery, each scored with the shipped model:

- ``heldout``: the validation concepts of the model's training run (``training.data.split_by_concept`` with
  the run's arguments: a quarter of the google-style concepts, seed 0; never trained on) split in two by
  ``--seed``. The gallery holds every image of the first half ("present") and ``--others`` random training
  images (the rest of a collection). Queries: each caption of a present concept (a hit: an image of its
  concept in the top 10 above the floor); each caption of the other half (no image of those concepts is in
  the gallery); each word of 4+ letters of those captions that is in no gallery caption.
- ``home:DIR``: an indexed bench.ocr corpus (DIR/home, DIR/truth.json): its absent words, through the vectors
  of its live index (nothing there says which pictures a word describes, so no recall).

Every rule's floor is computed from the gallery alone, as a publish does (indexer.floor_estimate).

    python -m bench.floor_rules heldout [--seed 1] [--others 4000]
    python -m bench.floor_rules home:bench-data/ocr-corpus
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

MANIFEST = Path("/work/shared/data/corpora/dev.jsonl")
MODEL = "local-dir:models/glimpse-icons-distil"

# indexer.floor_estimate's probes until 2026-12-07 (the comparison's baseline)
OLD_PROBES = (
    "blorf quendix", "zarnip wobble tesk", "vlim dorrow spunk", "qwertyuiop asdfghjkl", "xylo frumpet grindle",
    "snerk pallow mivvy", "the", "and also", "however, nevertheless", "a list of prime numbers",
    "the concept of justice", "irony", "a feeling of nostalgia", "quarterly tax return deadline",
    "kernel panic stack trace", "the meaning of the subjunctive mood", "amortization schedule",
    "regulatory compliance audit", "an abstract philosophical argument", "the square root of minus one",
    "semantic versioning policy", "a terms and conditions clause", "hypothetical counterfactual reasoning",
    "the passive voice", "yesterday's meeting minutes", "recursion", "an unspecified quantity", "epistemology",
    "the second law of thermodynamics", "procrastination", "a vague sense of obligation",
    "lorem ipsum dolor sit amet", "123456789", "%%% ### @@@", "null undefined NaN", "synergy leverage paradigm",
    "the price of tea in 1843", "a rumour nobody believes", "the difference between affect and effect",
    "an invoice number",
)  # fmt: skip


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def statistics() -> dict[str, Callable[[np.ndarray], float]]:
    """name -> floor from the probes' (probes x gallery) scores."""

    def top(s: np.ndarray, k: int) -> np.ndarray:
        return -np.sort(-s, axis=1)[:, :k]

    return {
        "p99 of top-10": lambda s: float(np.percentile(top(s, 10), 99)),
        "p99.5 of top-10": lambda s: float(np.percentile(top(s, 10), 99.5)),
        "max": lambda s: float(s.max()),
        "2nd best probe's top-1": lambda s: float(np.sort(s.max(1))[-2]),
    }


def heldout(enc, seed: int, others: int, work: Path) -> dict:
    from search.media.decode import load_rgb
    from training.data import read_manifest, split_by_concept

    recs = read_manifest(MANIFEST)
    train, val = split_by_concept(recs, 0.25, "google", 0)
    rng = random.Random(seed)
    groups = sorted({r.group for r in val})
    rng.shuffle(groups)
    present_groups = set(groups[: len(groups) // 2])
    present = [r for r in val if r.group in present_groups]
    absent = [r for r in val if r.group not in present_groups]
    gallery_recs = present + rng.sample(train, min(others, len(train)))
    cache = work / f"heldout-{seed}-{others}.npy"
    if cache.exists():
        gallery = np.load(cache)
    else:
        paths = [r.path for r in gallery_recs]
        gallery = unit(np.concatenate([enc.encode_pil([load_rgb(p) for p in paths[k : k + 256]])
                                       for k in range(0, len(paths), 256)]))  # fmt: skip
        np.save(cache, gallery)
    seen: set = set()
    present_q = []
    for r in present:
        for c in r.captions:
            if (c.lower(), r.group) not in seen:
                seen.add((c.lower(), r.group))
                present_q.append((c, r.group))
    words_in = {w for r in gallery_recs for c in r.captions for w in re.findall(r"[a-z]+", c.lower())}
    absent_caps = sorted({c for r in absent for c in r.captions} - {c for r in gallery_recs for c in r.captions})
    absent_words = sorted({w for c in absent_caps for w in re.findall(r"[a-z]{4,}", c.lower())} - words_in)
    return {
        "gallery": gallery,
        "group_of": np.array([r.group for r in gallery_recs]),
        "present": present_q,
        "absent captions": absent_caps,
        "absent words": absent_words,
    }


def home(folder: Path) -> dict:
    import faiss

    truth = json.loads((folder / "truth.json").read_text())
    index_root = folder / "home" / "index"
    version = index_root / (index_root / "current").read_text().strip()
    index = faiss.read_index(str(version / "images.faiss"))  # a flat index: the vectors as stored
    gallery = unit(faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal))  # under its id map
    return {"gallery": gallery, "absent words": truth["absent"]}


def evaluate(enc, data: dict, probe_sets: dict[str, tuple[str, ...]]) -> list[dict]:
    gallery = data["gallery"]

    def scores(texts) -> np.ndarray:
        return unit(enc.encode_texts(list(texts))) @ gallery.T

    sets = {k: scores(data[k]) for k in ("absent captions", "absent words") if k in data}
    if "present" in data:
        sp = scores([c for c, _ in data["present"]])
        truth = np.array([g for _, g in data["present"]])
        ranked = np.argsort(-sp, axis=1)[:, :10]
        hit = data["group_of"][ranked] == truth[:, None]  # (queries, 10)
        top_scores = np.take_along_axis(sp, ranked, axis=1)
    rows = []
    for probe_name, probes in probe_sets.items():
        ps = scores(probes)
        for stat_name, stat in statistics().items():
            floor = stat(ps)
            row = {"probes": probe_name, "floor": stat_name, "value": round(floor, 4)}
            for k, s in sets.items():
                row[f"{k} with any"] = round(float((s.max(1) >= floor).mean()), 4)
            if "present" in data:
                row["present R@10 above floor"] = round(float((hit & (top_scores >= floor)).any(1).mean()), 4)
                row["present R@10, no floor"] = round(float(hit.any(1).mean()), 4)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gallery", help="heldout, or home:DIR (a bench.ocr corpus, indexed)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--others", type=int, default=4000)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--work", default="bench-data/floor-rules")
    a = ap.parse_args()

    from indexer.floor_estimate import PROBES
    from search.encoders.model_spec import ModelSpec
    from search.encoders.protocol import open_encoder

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    enc = open_encoder(ModelSpec.parse(a.model))
    if a.gallery == "heldout":
        data = heldout(enc, a.seed, a.others, work)
    elif a.gallery.startswith("home:"):
        data = home(Path(a.gallery[5:]))
    else:
        ap.error(f"unknown gallery {a.gallery!r}")
    counts = ", ".join(f"{len(v)} {k}" for k, v in data.items() if k not in ("gallery", "group_of"))
    print(f"gallery {a.gallery} (seed {a.seed}): {len(data['gallery'])} images; queries: {counts}")
    probe_sets = {"old": OLD_PROBES, "current": PROBES} if tuple(PROBES) != OLD_PROBES else {"current": PROBES}
    rows = evaluate(enc, data, probe_sets)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
