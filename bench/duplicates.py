"""Near-duplicates: choose the default threshold by measurement, and time the finder at scale.

``threshold``: plant copies of real photos (resized to 50% and 25%, JPEG q=40/55/70, cropped 5% and
10% per side, and resized+recompressed together), encode originals and copies with a model, and print
the cosine of each copy to its original beside the highest cosine between different images (photo vs
photo, copy vs another photo, and icons of one set vs each other). A threshold between the two groups
finds the copies and groups nothing else.

``cost``: a synthetic home of N vectors (bench/synth.py: rows, vectors, an index published by Glimpse)
and the wall time of ``Engine.duplicates`` over it (every vector searched against the live index).

    python -m bench.duplicates threshold --model local-dir:models/glimpse-icons-distil
    python -m bench.duplicates cost --n 100000 --home /tmp/glimpse-synth-100k
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = Path("/work/shared/data/corpora/sample-photos/images")
ICONS = Path("/work/shared/data/corpora/openmoji/images/color")


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img: Image.Image, frac: float) -> Image.Image:
    w, h = img.size
    dx, dy = int(w * frac), int(h * frac)
    return img.crop((dx, dy, w - dx, h - dy))


COPIES = {
    "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2), Image.LANCZOS),
    "resize 25%": lambda im: im.resize((max(1, im.width // 4), max(1, im.height // 4)), Image.LANCZOS),
    "jpeg q40": lambda im: _jpeg(im, 40),
    "jpeg q55": lambda im: _jpeg(im, 55),
    "jpeg q70": lambda im: _jpeg(im, 70),
    "crop 5%": lambda im: _crop(im, 0.05),
    "crop 10%": lambda im: _crop(im, 0.10),
    "resize 50% + jpeg q50": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2), Image.LANCZOS), 50),
}


def measure_threshold(model: str, photos: Path, icons: Path, n_icons: int) -> dict:
    from search.encoder import Encoder
    from search.images import load_rgb_bounded
    from search.model_spec import ModelSpec

    enc = Encoder(ModelSpec.parse(model), device="cpu")

    def encode(images: list[Image.Image]) -> np.ndarray:
        # through the same bounded decode a query uses (PNG round trip keeps each copy's pixels)
        out = []
        for im in images:
            buf = io.BytesIO()
            im.save(buf, "PNG")
            out.append(load_rgb_bounded(buf.getvalue(), enc.image_size))
        return np.asarray(enc.encode_pil(out), np.float32)

    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    originals = [Image.open(p).convert("RGB") for p in files]
    base = encode(originals)
    copy_scores: dict[str, list[float]] = {}
    cross_copy = []
    cross_rows: list[np.ndarray] = []
    for name, make in COPIES.items():
        vecs = encode([make(im) for im in originals])
        sims = vecs @ base.T
        copy_scores[name] = np.diag(sims).tolist()
        cross_copy.append(float((sims - 2 * np.eye(len(files))).max()))
        cross_rows.append(sims[~np.eye(len(files), dtype=bool)])
    photo_pairs = base @ base.T
    photo_max = float(photo_pairs[np.triu_indices(len(files), 1)].max())
    icon_files = sorted(icons.rglob("*.png"))[:n_icons] if icons.exists() else []
    icon_max = None
    icon_p999 = None
    s = iv = np.zeros((0, 0))
    if icon_files:
        iv = encode([Image.open(p).convert("RGBA").convert("RGB") for p in icon_files])
        s = iv @ iv.T
        icon_max = float(s[np.triu_indices(len(iv), 1)].max())
        icon_p999 = float(np.percentile(s[np.triu_indices(len(iv), 1)], 99.9))
    all_copies = [s for v in copy_scores.values() for s in v]
    crops = np.array([s for k, v in copy_scores.items() if k.startswith("crop") for s in v])
    others = np.array([s for k, v in copy_scores.items() if not k.startswith("crop") for s in v])
    photo_neg = photo_pairs[np.triu_indices(len(files), 1)]
    icon_neg = s[np.triu_indices(len(iv), 1)] if icon_files else np.zeros(0)
    table = {
        str(t): {
            "resized/recompressed found %": round(100 * float((others >= t).mean()), 1),
            "cropped found %": round(100 * float((crops >= t).mean()), 1),
            "different photo pairs grouped": int((photo_neg >= t).sum()),
            "copy-to-other-photo links": int(sum(int((row >= t).sum()) for row in cross_rows)),
            "different icon pairs grouped %": round(100 * float((icon_neg >= t).mean()), 3) if icon_files else None,
        }
        for t in (0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
    }
    return {
        "at_threshold": table,
        "model": model,
        "photos": len(files),
        "copy_to_original": {
            k: {"min": round(min(v), 4), "median": round(float(np.median(v)), 4)} for k, v in copy_scores.items()
        },
        "lowest_copy": round(min(all_copies), 4),
        "highest_different_photo_pair": round(photo_max, 4),
        "highest_copy_to_other_photo": round(max(cross_copy), 4),
        "icons": len(icon_files),
        "highest_different_icon_pair": round(icon_max, 4) if icon_max is not None else None,
        "icon_pairs_p99.9": round(icon_p999, 4) if icon_p999 is not None else None,
    }


def measure_cost(n: int, home: Path, threshold: float) -> dict:
    import faiss

    from bench.synth import synth_home
    from search.engine import Engine
    from search.paths import Paths

    t0 = time.perf_counter()
    stamp = synth_home(home, n)
    build_s = time.perf_counter() - t0
    engine = Engine(Paths.resolve(home))
    faiss.omp_set_num_threads(__import__("os").cpu_count() or 1)
    t0 = time.perf_counter()
    groups = engine.duplicates(threshold)
    took = time.perf_counter() - t0
    import resource

    return {
        "n": n,
        "index_type": stamp["index_type"],
        "home_build_s": round(build_s, 1),
        "threshold": threshold,
        "groups": len(groups),
        "grouped_images": sum(len(g.images) for g in groups),
        "duplicates_s": round(took, 1),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("threshold")
    t.add_argument("--model", default="local-dir:models/glimpse-icons-distil")
    t.add_argument("--photos", type=Path, default=PHOTOS)
    t.add_argument("--icons", type=Path, default=ICONS)
    t.add_argument("--n-icons", type=int, default=400)
    c = sub.add_parser("cost")
    c.add_argument("--n", type=int, default=100_000)
    c.add_argument("--home", type=Path, default=Path("/tmp/glimpse-synth-dupes"))
    c.add_argument("--threshold", type=float, default=0.96)
    args = ap.parse_args()
    if args.cmd == "threshold":
        out = measure_threshold(args.model, args.photos, args.icons, args.n_icons)
    else:
        out = measure_cost(args.n, args.home, args.threshold)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
