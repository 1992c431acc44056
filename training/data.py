"""Caption manifests, a concept-level train/validation split and a pixel cache.

Decoding PNGs dominates a small model's step time on CPU, so every image is
decoded once (through ``search.media.decode.load_rgb``, which puts transparency on
white) at the training resolution and kept as uint8 in a .npy cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from indexer.captions import CAPTION_KEYS, PATH_KEYS, manifest_rows
from search.media.decode import load_rgb


@dataclass
class Record:
    path: str  # absolute
    captions: list[str]
    group: str  # concept: never split across train and validation
    style: str = ""
    meta: dict = field(default_factory=dict)


def read_manifest(manifest: str | os.PathLike, warn: Callable[[str], None] | None = None) -> list[Record]:
    """One record per image of a caption manifest, read by the indexer's reader
    (``indexer.captions.manifest_rows``: the same keys, the same bad rows skipped and
    reported to ``warn``, default logged), plus the training keys ``group`` and ``style``.

    Rows naming the same image are merged into one record with several captions; its
    group, style and other keys (``meta``) come from the image's first row.
    """
    by_path: dict[str, Record] = {}
    for row in manifest_rows(manifest, warn=warn):
        rec = by_path.get(row.path)
        if rec is None:
            extra = {k: v for k, v in row.record.items() if k not in _NOT_META}
            rec = by_path[row.path] = Record(
                row.path, [], row.record.get("group") or row.path, row.record.get("style") or "", extra
            )
        rec.captions.extend(c for c in row.captions if c not in rec.captions)
    return list(by_path.values())


_NOT_META = {*PATH_KEYS, *CAPTION_KEYS, "group", "style"}


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
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop training
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
