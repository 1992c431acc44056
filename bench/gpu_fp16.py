#!/usr/bin/env python3
"""fp16 autocast vs fp32 on a CUDA GPU, with trained weights (random weights say nothing here).

    python bench/gpu_fp16.py [--model local-dir:models/glimpse-icons-distil] [--images demo/corpus]

Prints the cosine between fp16 and fp32 vectors of every image and of its captions'
texts, and whether each image's top-10 neighbours stay the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=f"local-dir:{REPO / 'models' / 'glimpse-icons-distil'}")
    ap.add_argument("--images", default=str(REPO / "demo" / "corpus"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from indexer.load import iter_batches
    from search.encoders.torch_clip import Encoder, ModelSpec
    from search.media.decode import is_image_path

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    enc = Encoder(ModelSpec.parse(args.model), device="cuda")
    paths = sorted(str(p) for p in Path(args.images).rglob("*") if is_image_path(p.name))
    pix = torch.stack(
        [torch.as_tensor(b.pixels) for bt in iter_batches(paths, enc.pil_transform, enc.image_size, 64, 4) for b in bt]
    )
    captions = {}
    manifest = Path(args.images) / "captions.jsonl"
    if manifest.exists():
        import json

        for line in manifest.read_text().splitlines():
            row = json.loads(line)
            captions.setdefault(str((manifest.parent / row["path"]).resolve()), row["caption"])
    texts = [captions.get(str(Path(p).resolve()), Path(p).stem.replace("_", " ")) for p in paths]
    out = {}
    for precision in ("fp16", "fp32"):
        enc.precision = precision
        out[precision] = (enc.encode_pixels(pix), enc.encode_texts(texts))
    img_cos = (out["fp16"][0] * out["fp32"][0]).sum(1)
    txt_cos = (out["fp16"][1] * out["fp32"][1]).sum(1)
    top = {p: np.argsort(-(out[p][1] @ out[p][0].T), axis=1)[:, :10] for p in out}
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top["fp16"], top["fp32"])])
    print(f"model {args.model}, {len(paths)} images, GPU {torch.cuda.get_device_name(0)}")
    print(f"image vectors fp16 vs fp32: cosine min {img_cos.min():.5f}, mean {img_cos.mean():.5f}")
    print(f"text vectors fp16 vs fp32: cosine min {txt_cos.min():.5f}, mean {txt_cos.mean():.5f}")
    print(f"text->image top-10 agreement fp16 vs fp32: {agree:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
