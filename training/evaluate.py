"""Retrieval recall@k on held-out concepts, always reported beside chance.

Three tasks on the validation split:
  t2i  primary caption -> image in the gallery style
  i2t  image -> primary caption
  i2i  image in the gallery style -> the same concept's images in the other
       styles (i2i_rev: the reverse direction)
plus raw-pixel cosine i2i baselines (plain and per-image mean-centred),
because across emoji styles layout and colour alone already retrieve a lot:
a model has to beat pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .augment import to_tensor
from .data import Record

KS = (1, 5, 10)


def chance_recall(gallery_size: int, n_correct: np.ndarray, k: int) -> float:
    """Expected recall@k of a random ranking (hypergeometric: >=1 correct in k draws)."""
    out = []
    for m in n_correct:
        p_miss = 1.0
        for i in range(min(k, gallery_size)):
            p_miss *= max(0.0, (gallery_size - m - i) / (gallery_size - i))
        out.append(1.0 - p_miss)
    return float(np.mean(out)) if out else 0.0


def recall(sim: np.ndarray, correct: np.ndarray, ks=KS) -> dict[str, float]:
    """sim (Q,G) scores, correct (Q,G) bool -> {"R@k": fraction of queries with a hit in the top k}."""
    order = np.argsort(-sim, axis=1)[:, : max(ks)]
    hits = np.take_along_axis(correct, order, axis=1)
    return {f"R@{k}": float(hits[:, :k].any(1).mean()) for k in ks}


@dataclass
class EvalSet:
    """Indices into the validation records for the three tasks."""

    gallery: np.ndarray  # val indices shown as images/captions
    others: np.ndarray  # val indices of the same concepts in other styles
    groups: np.ndarray  # group label per val record

    @classmethod
    def build(cls, val: list[Record], val_style: str | None = None) -> EvalSet:
        groups = np.array([r.group for r in val])
        if val_style:
            gallery = [i for i, r in enumerate(val) if r.style == val_style]
        else:  # one image per concept
            seen: dict[str, int] = {}
            for i, r in enumerate(val):
                seen.setdefault(r.group, i)
            gallery = sorted(seen.values())
        gset = set(gallery)
        gstyle = {(val[i].group, val[i].style) for i in gallery}
        ggroups = {val[i].group for i in gallery}
        others = [
            i for i, r in enumerate(val) if i not in gset and r.group in ggroups and (r.group, r.style) not in gstyle
        ]
        return cls(np.array(gallery, dtype=int), np.array(others, dtype=int), groups)

    def correct(self, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        return self.groups[q][:, None] == self.groups[g][None, :]


@torch.no_grad()
def embed_images(model, pixels: np.ndarray, mean, std, device, batch: int = 512) -> torch.Tensor:
    out = []
    for i in range(0, len(pixels), batch):
        x = to_tensor(np.asarray(pixels[i : i + batch]), mean, std, device)
        out.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def embed_tokens(model, tokens: torch.Tensor, device, batch: int = 1024) -> torch.Tensor:
    out = []
    for i in range(0, len(tokens), batch):
        out.append(F.normalize(model.encode_text(tokens[i : i + batch].to(device)).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def evaluate(
    model,
    es: EvalSet,
    pixels: np.ndarray,
    primary_tokens: torch.Tensor,
    mean,
    std,
    device,
    teacher_text: np.ndarray | None = None,
) -> dict:
    """Recall@k for t2i, i2t and i2i (with chance) on the validation records.

    ``teacher_text`` (gallery-aligned caption embeddings from a text teacher) adds
    ``t2i_teacher``: the image tower ranked by the teacher's text instead of the student's.
    """
    was_training = model.training
    model.eval()
    g = es.gallery
    img = embed_images(model, pixels, mean, std, device).numpy()
    txt = embed_tokens(model, primary_tokens[torch.as_tensor(g)], device).numpy()
    res: dict = {"gallery": int(len(g))}
    c = es.correct(g, g)
    res["t2i"] = recall(txt @ img[g].T, c)
    res["i2t"] = recall(img[g] @ txt.T, c)
    res["chance"] = {f"R@{k}": chance_recall(len(g), c.sum(1), k) for k in KS}
    if teacher_text is not None:
        res["t2i_teacher"] = recall(teacher_text @ img[g].T, c)
    if len(es.others):
        o = es.others
        ci = es.correct(g, o)
        res["i2i"] = recall(img[g] @ img[o].T, ci)
        res["i2i_chance"] = {f"R@{k}": chance_recall(len(o), ci.sum(1), k) for k in KS}
        res["i2i_rev"] = recall(img[o] @ img[g].T, ci.T)
        res["i2i_others"] = int(len(o))
    model.train(was_training)
    return res


def pixel_baseline(es: EvalSet, pixels: np.ndarray) -> dict[str, dict[str, float]]:
    """i2i recall@k of cosine similarity between flattened pixels: raw, and mean-centred per image."""
    if not len(es.others):
        return {}
    raw = np.asarray(pixels).reshape(len(pixels), -1).astype(np.float32) / 255.0
    out = {}
    for name, flat in (("raw", raw), ("centred", raw - raw.mean(1, keepdims=True))):
        flat = flat / (np.linalg.norm(flat, axis=1, keepdims=True) + 1e-8)
        out[name] = recall(flat[es.gallery] @ flat[es.others].T, es.correct(es.gallery, es.others))
    return out
