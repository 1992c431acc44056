"""Caption manifests, a concept-level train/validation split and a pixel cache.

Decoding PNGs dominates a small model's step time on CPU, so every image is
decoded once (through ``search.images.load_rgb``, which puts transparency on
white) at the training resolution and kept as uint8 in a .npy cache.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from search.images import load_rgb


@dataclass
class Record:
    path: str  # absolute
    captions: list[str]
    group: str  # concept: never split across train and validation
    style: str = ""
    meta: dict = field(default_factory=dict)


def read_manifest(manifest: str | os.PathLike) -> list[Record]:
    """Read JSONL ({"path", "caption"|"captions", ["group", "style"]}) or CSV (path,caption).

    Relative paths resolve against the manifest's folder. CSV rows sharing a
    path are merged into one record with several captions.
    """
    manifest = Path(manifest)
    base = manifest.parent
    rows: list[dict] = []
    if manifest.suffix.lower() == ".csv":
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        with open(manifest, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    by_path: dict[str, Record] = {}
    for row in rows:
        caps = row.get("captions") or [row.get("caption", "")]
        caps = [c.strip() for c in caps if c and c.strip()]
        if not caps:
            continue
        path = str((base / row["path"]).resolve())
        if path in by_path:
            by_path[path].captions.extend(c for c in caps if c not in by_path[path].captions)
            continue
        extra = {k: v for k, v in row.items() if k not in ("path", "caption", "captions", "group", "style")}
        by_path[path] = Record(path, caps, row.get("group") or path, row.get("style") or "", extra)
    return list(by_path.values())


def split_by_concept(
    records: list[Record], val_fraction: float = 0.25, val_style: str | None = None, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """Hold out whole concepts (groups), so no caption or concept appears on both sides.

    With ``val_style``, validation concepts are drawn among groups that have an
    image in that style, and the style is kept out of training entirely: the
    figures then measure unseen concepts drawn in an unseen style.
    """
    groups = sorted({r.group for r in records if not val_style or r.style == val_style})
    rng = random.Random(seed)
    rng.shuffle(groups)
    val_groups = set(groups[: max(1, round(len(groups) * val_fraction))])
    val_caps = {c.lower() for r in records if r.group in val_groups for c in r.captions}
    train, val = [], []
    for r in records:
        if r.group in val_groups:
            val.append(r)
        elif val_style and r.style == val_style:
            continue
        else:
            # Same caption text under another concept would leak the answer.
            caps = [c for c in r.captions if c.lower() not in val_caps]
            if caps:
                train.append(Record(r.path, caps, r.group, r.style, r.meta))
    return train, val


def _decode_one(path: str, transform) -> np.ndarray:
    img = load_rgb(path, draft_size=256)
    t = transform(img)  # float 0..1, CHW, exactly the indexing-time resize/crop
    return (t.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def pixel_cache(records: list[Record], size: int, cache_dir: str | os.PathLike, preprocess: dict) -> np.ndarray:
    """uint8 (N, size, size, 3) pixels for ``records``, decoded once and memoised on disk.

    Unreadable images become white squares (and are reported) rather than
    stopping a long run.
    """
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**{**preprocess, "size": size, "mean": (0.0,) * 3, "std": (1.0,) * 3})
    key = hashlib.sha1(
        json.dumps([size, sorted(preprocess.items()), [r.path for r in records]], default=str).encode()
    ).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"pixels-{size}-{key}.npy"
    if out.exists():
        return np.load(out, mmap_mode="r")
    transform = image_transform_v2(cfg, is_train=False)
    arr = np.full((len(records), size, size, 3), 255, dtype=np.uint8)
    bad = 0
    for i, r in enumerate(tqdm(records, desc=f"decode {size}px", unit="img", mininterval=2)):
        try:
            arr[i] = _decode_one(r.path, transform)
        except Exception as exc:  # one bad file must not stop training
            bad += 1
            tqdm.write(f"skip {r.path}: {exc}")
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, out)
    if bad:
        tqdm.write(f"{bad} images could not be decoded (left white)")
    return arr


class CaptionTable:
    """All captions tokenised once; sample one caption per image per step."""

    def __init__(self, records: list[Record], tokenizer):
        self.texts = [c for r in records for c in r.captions]
        self.tokens = tokenizer(self.texts)
        counts = np.array([len(r.captions) for r in records])
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.count = counts

    def sample_rows(self, idx: np.ndarray, rng: np.random.Generator, primary_prob: float = 0.5) -> np.ndarray:
        """Row numbers (into ``texts``/``tokens``) of one caption per image: the primary one
        half the time (it is what users type), else any."""
        pick = rng.integers(0, 1 << 30, size=len(idx)) % self.count[idx]
        pick = np.where(rng.random(len(idx)) < primary_prob, 0, pick)
        return self.start[idx] + pick

    def sample(self, idx: np.ndarray, rng: np.random.Generator, primary_prob: float = 0.5):
        return self.tokens[self.sample_rows(idx, rng, primary_prob)]

    def primary(self, idx: np.ndarray):
        return self.tokens[self.start[idx]]
