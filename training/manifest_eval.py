"""Caption → own image recall@k on any manifest, loading the model exactly as ``glimpse index`` does.

Used for the demo corpus goal ("the right image is in the top 10 for >= 80% of
its own captions"):

    python -m training.manifest_eval local-dir:models/glimpse-icons-distil demo/corpus/captions.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Any

import open_clip
import torch
import torch.nn.functional as F

from search.media.decode import load_rgb

from .data import read_manifest


@torch.no_grad()
def manifest_recall(model_name: str, manifest: str, ks=(1, 5, 10), threads: int = 1) -> dict:
    """Every caption queries the whole manifest's images; a hit is its own image in the top k."""
    torch.set_num_threads(threads)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    recs = read_manifest(manifest)
    img = torch.cat(
        [
            F.normalize(
                model.encode_image(torch.stack([preprocess(load_rgb(r.path)) for r in recs[i : i + 256]])), dim=-1
            )
            for i in range(0, len(recs), 256)
        ]
    )
    caps = [(i, c) for i, r in enumerate(recs) for c in r.captions]
    txt = F.normalize(model.encode_text(tokenizer([c for _, c in caps])), dim=-1)
    own = torch.tensor([i for i, _ in caps])
    rank = ((txt @ img.T) > (txt @ img.T).gather(1, own[:, None])).sum(1)  # images scoring above the right one
    out: dict[str, Any] = {"images": len(recs), "captions": len(caps)}
    out.update({f"R@{k}": float((rank < k).float().mean()) for k in ks})
    out["chance"] = {f"R@{k}": k / len(recs) for k in ks}
    out["misses_at_10"] = [c for (i, c), r in zip(caps, rank.tolist()) if r >= 10][:20]
    return out


if __name__ == "__main__":
    print(json.dumps(manifest_recall(sys.argv[1], sys.argv[2]), indent=1))
