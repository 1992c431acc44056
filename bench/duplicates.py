"""Near-duplicates: choose the default threshold by measurement, and time the finder at scale.

``threshold``: plant copies of real photos (resized to 50% and 25%, JPEG q=40/55/70, cropped 5% and
10% per side, and resized+recompressed together), encode originals and copies with a model, and print
the cosine of each copy to its original beside the highest cosine between different images (photo vs
photo, copy vs another photo, and icons of one set vs each other). A threshold between the two groups
finds the copies and groups nothing else.

``quality``: a collection of your own (default: 3,000 drawings, icons and emoji sampled from five
corpora, plus the sample photos), with 10% of its images copied once each in one of twelve ways
(resized, recompressed, format changed, transparency flattened onto white or black, cropped 3-10%,
rotated, and the combination the issue's trial used), indexed by the real ``glimpse index`` with a
model, then grouped at each candidate threshold and pixel limit. Ground truth: a planted copy belongs
with its original, and images that are pixel twins in the collection (16x16 grey thumbnails within
2/255, re-uploads) belong together. Reported per kind of copy: the share found in its original's
group; and the distinct images wrongly grouped (in a group holding no true duplicate of theirs) as a
share of the collection.

``cost``: a synthetic home of N vectors (bench/synth.py: rows, vectors, an index published by Glimpse)
with 1% of its rows overwritten by near-copies of others (cosine 0.97-0.999), and the wall and CPU time
of the finder over it (every vector searched against the live index) at each IVF nprobe, with the share
of planted pairs it grouped and the images it grouped that were not planted.

    python -m bench.duplicates threshold --model local-dir:models/glimpse-icons-distil
    python -m bench.duplicates quality --out bench-data/dupes-quality
    python -m bench.duplicates cost --n 100000 --home bench-data/homes/dupes-100k
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
    from search.encoders.model_spec import ModelSpec
    from search.encoders.torch_clip import Encoder
    from search.media.decode import load_rgb_bounded

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


CORPORA = Path("/work/shared/data/corpora")
SAMPLE = {"openclipart": 1100, "tabler-icons": 600, "openmoji": 600, "fluent-emoji": 450, "emoji-google": 250}


def _flat(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    img = img.convert("RGBA")
    out = Image.new("RGB", img.size, background)
    out.paste(img, mask=img.getchannel("A"))
    return out


def _scaled(img: Image.Image, share: float) -> Image.Image:
    return img.resize((max(1, round(img.width * share)), max(1, round(img.height * share))), Image.LANCZOS)


def _rotated(img: Image.Image, degrees: float) -> Image.Image:
    return _flat(img, (255, 255, 255)).rotate(degrees, resample=Image.BICUBIC, fillcolor=(255, 255, 255))


# name -> (make the copy, file suffix, JPEG quality or None)
KINDS: dict = {
    "resize 50%": (lambda im: _scaled(im, 0.5), ".png", None),
    "resize 25%": (lambda im: _scaled(im, 0.25), ".png", None),
    "jpeg q40 (format change)": (lambda im: _flat(im, (255, 255, 255)), ".jpg", 40),
    "jpeg q75, resized 70%": (lambda im: _scaled(_flat(im, (255, 255, 255)), 0.7), ".jpg", 75),
    "flattened on white": (lambda im: _flat(im, (255, 255, 255)), ".png", None),
    "flattened on black": (lambda im: _flat(im, (0, 0, 0)), ".png", None),
    "crop 3%": (lambda im: _crop(im, 0.03), ".png", None),
    "crop 5%": (lambda im: _crop(im, 0.05), ".png", None),
    "crop 10%": (lambda im: _crop(im, 0.10), ".png", None),
    "crop 3% + 85% + white + jpeg q75": (lambda im: _scaled(_flat(_crop(im, 0.03), (255, 255, 255)), 0.85), ".jpg", 75),
    "rotate 2°": (lambda im: _rotated(im, 2), ".png", None),
    "rotate 4°": (lambda im: _rotated(im, 4), ".png", None),
}


def build_collection(out: Path, seed: int, share: float) -> dict:
    """Sample the corpora into ``out/images`` under neutral names and plant copies; returns the truth."""
    import random

    rng = random.Random(seed)
    files: list[Path] = sorted(PHOTOS.glob("*.png"))
    for name, n in SAMPLE.items():
        pool = sorted((CORPORA / name).rglob("*.png"))
        rng.shuffle(pool)
        files += pool[:n]
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, src in enumerate(files):
        name = f"img_{i:05d}.png"
        (folder / name).write_bytes(src.read_bytes())
        names.append(name)
    order = rng.sample(range(len(files)), len(files))
    copies = []
    kinds = list(KINDS)
    for j in range(int(len(files) * share)):
        kind = kinds[j % len(kinds)]
        make, suffix, quality = KINDS[kind]
        while True:  # a copy that shows nothing (black strokes flattened onto black) is no copy: next original
            i = order.pop()
            with Image.open(folder / names[i]) as im:
                im.load()
                copy = make(im)
            if float(np.asarray(copy.convert("L"), np.float32).std()) >= 4.0:
                break
        name = f"copy_{j:05d}{suffix}"
        if quality:
            copy.convert("RGB").save(folder / name, quality=quality)
        else:
            copy.save(folder / name)
        copies.append({"name": name, "original": names[i], "kind": kind})
    truth = {"images": names, "copies": copies}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _twins(folder: Path, names: list[str]) -> list[set[str]]:
    """Classes of pixel twins among the collection's own images: 16x16 grey thumbnails within 2/255."""
    from search.media.decode import flatten_to_rgb

    thumbs = np.stack(
        [
            np.asarray(flatten_to_rgb(Image.open(folder / n)).convert("L").resize((16, 16), Image.BOX), np.float32)
            for n in names
        ]
    ).reshape(len(names), -1)
    parent = list(range(len(names)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for start in range(0, len(names), 32):
        block = np.abs(thumbs[start : start + 32, None, :] - thumbs[None, :, :]).max(axis=2)
        for a, b in zip(*np.nonzero(block <= 2.0)):
            if start + a < b:
                parent[find(start + a)] = find(int(b))
    classes: dict[int, set[str]] = {}
    for i, n in enumerate(names):
        classes.setdefault(find(i), set()).add(n)
    return [c for c in classes.values() if len(c) > 1]


def measure_quality(out: Path, model: str, thresholds: list[float], limits: list[float], seed: int) -> dict:
    """Index the collection with ``model`` (once), then score the groups at each setting."""
    import subprocess
    import sys

    from search.paths import Paths
    from search.store.database import Store
    from search.vectors.duplicates import find_duplicates
    from search.vectors.live import IndexDir

    truth = json.loads((out / "truth.json").read_text()) if (out / "truth.json").exists() else None
    if truth is None:
        truth = build_collection(out, seed, 0.10)
    home = out / "home"
    if not (home / "index" / "current").exists():
        t0 = time.perf_counter()
        subprocess.run(
            # no OCR: text in images plays no part in duplicates, and reading it takes longer than indexing
            [sys.executable, "-m", "glimpse.cli", "index", str(out / "images"), "--model", model, "--no-ocr"],
            env={**__import__("os").environ, "GLIMPSE_HOME": str(home)},
            check=True,
        )
        print(f"indexed in {time.perf_counter() - t0:.0f} s", flush=True)
    folder = out / "images"
    label: dict[str, int] = {}  # name -> true class
    everything = truth["images"] + [c["name"] for c in truth["copies"]]
    for k, c in enumerate(_twins(folder, everything)):
        for n in c:
            label[n] = k
    nxt = len(label) + 1_000_000
    for c in truth["copies"]:
        if c["original"] not in label:
            label[c["original"]] = nxt
            nxt += 1
        label[c["name"]] = label[c["original"]]
    paths = Paths.resolve(home)
    live = IndexDir(paths.index).load(use_gpu=False)
    store = Store(paths.db)  # brought to the head migration, as Glimpse opens a user's home
    n_images = len(truth["images"]) + len(truth["copies"])
    rows = []
    try:
        for t in thresholds:
            for v in limits:
                t0 = time.perf_counter()
                found = find_duplicates(store, live, t, limit=v)
                took = time.perf_counter() - t0
                group_of = {Path(r.path).name: gi for gi, g in enumerate(found.groups) for r in g.images}
                members = [[Path(r.path).name for r in g.images] for g in found.groups]
                wrong = [
                    n
                    for n, gi in group_of.items()
                    if not any(m != n and label.get(m, -1) == label.get(n, -2) for m in members[gi])
                ]
                per_kind: dict[str, list[int]] = {}
                for c in truth["copies"]:
                    gi = group_of.get(c["name"])
                    ok = gi is not None and any(
                        m != c["name"] and label.get(m) == label[c["name"]] for m in members[gi]
                    )
                    per_kind.setdefault(c["kind"], []).append(int(ok))
                row = {
                    "threshold": t,
                    "max_distance": v,
                    "seconds": round(took, 1),
                    "groups": len(found.groups),
                    "grouped_images": len(group_of),
                    "wrongly_grouped": len(wrong),
                    "wrongly_grouped_%": round(100 * len(wrong) / n_images, 2),
                    "found_%": {k: round(100 * sum(x) / len(x), 1) for k, x in per_kind.items()},
                    "wrong_examples": sorted(wrong)[:6],
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        store.close()
    return {"model": model, "images": n_images, "copies": len(truth["copies"]), "runs": rows}


def plant_copies(home: Path, n: int, copies: int, seed: int = 5) -> None:
    """Overwrite the last ``copies`` rows' vectors with near-copies of rows 1..``copies`` (cosine
    0.97-0.999, as a resized or recompressed photo scores), a new ``vector_seq`` each; idempotent."""
    import sqlite3

    con = sqlite3.connect(Path(home) / "glimpse.db")
    try:
        src = np.arange(1, copies + 1)
        originals = [
            np.frombuffer(
                con.execute("SELECT vector FROM images WHERE id=?", (int(i),)).fetchone()[0], np.float16
            ).astype(np.float32)
            for i in src
        ]
        x = np.stack(originals)
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(x.shape) / np.sqrt(x.shape[1])
        y = x + rng.uniform(0.04, 0.25, (len(x), 1)) * noise
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        seq = (con.execute("SELECT max(vector_seq) FROM images").fetchone()[0] or 0) + 1
        con.executemany(
            "UPDATE images SET vector=?, vector_seq=? WHERE id=?",
            [(v.astype(np.float16).tobytes(), seq, int(n - copies + 1 + j)) for j, v in enumerate(y)],
        )
        # Pixel prints: every row gets one (a smooth random picture), and each copy its original's, so the
        # verification step runs on every candidate pair as it would on a real collection.
        from search.media.pixel_print import pixel_print

        def picture(k: int) -> Image.Image:
            small = np.random.default_rng(k).integers(0, 256, (8, 8, 3), dtype=np.uint8)
            return Image.fromarray(small).resize((128, 128), Image.BICUBIC)

        prints = {}
        for lo in range(1, n + 1, 10_000):
            batch = [(pixel_print(picture(i)), i) for i in range(lo, min(n, lo + 9_999) + 1)]
            prints.update((i, p) for p, i in batch if i <= copies)
            con.executemany("UPDATE images SET pixel_print=? WHERE id=?", batch)
        con.executemany(
            "UPDATE images SET pixel_print=? WHERE id=?",
            [(prints[int(i)], int(n - copies + 1 + j)) for j, i in enumerate(src)],
        )
        con.commit()
    finally:
        con.close()


def measure_cost(n: int, home: Path, threshold: float, nprobes: list[int], copies: int) -> dict:
    """Plant ``copies`` near-copies, publish, then time the finder at each nprobe (0: the nprobe tuned
    for queries, what the finder used before) and count the planted pairs it grouped."""
    import json as _json
    import resource

    from bench.synth import STAMP, publish_home, synth_rows
    from search.paths import Paths
    from search.store.database import Store
    from search.vectors.duplicates import find_duplicates
    from search.vectors.live import IndexDir

    t0 = time.perf_counter()
    stamp = synth_rows(home, n)
    if stamp.get("planted") != copies or stamp.get("prints") != 2 or not (home / "index" / "current").exists():
        plant_copies(home, n, copies)
        publish_home(home, rebuild=True)
        stamp = dict(stamp, planted=copies, prints=2)
        (home / STAMP).write_text(_json.dumps(stamp, indent=2))
    build_s = time.perf_counter() - t0
    paths = Paths.resolve(home)
    live = IndexDir(paths.index).load(use_gpu=False)
    store = Store(paths.db, upgrade=False)
    spec = live.manifest["index_type"]
    out: dict = {
        "n": n,
        "index_type": spec,
        "home_build_s": round(build_s, 1),
        "threshold": threshold,
        "planted_pairs": copies,
        "runs": [],
    }
    try:
        import search.vectors.duplicates as dup

        for nprobe in nprobes:
            exact_max = dup.EXACT_MAX
            if nprobe < 0:  # an exact index searched all-pairs, as before the transient IVF
                dup.EXACT_MAX = n + 1
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            try:
                groups = find_duplicates(store, live, threshold, max(1, nprobe or int(spec.get("nprobe") or 1))).groups
            finally:
                dup.EXACT_MAX = exact_max
            took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            group_of = {r.id: gi for gi, g in enumerate(groups) for r in g.images}
            found = sum(1 for j in range(copies) if group_of.get(j + 1, -1) == group_of.get(n - copies + 1 + j, -2))
            planted = set(range(1, copies + 1)) | set(range(n - copies + 1, n + 1))
            out["runs"].append(
                {
                    "nprobe": "all pairs (exact)" if nprobe < 0 else nprobe or f"tuned ({spec.get('nprobe')})",
                    "duplicates_s": round(took, 1),
                    "cpu_s": round(cpu, 1),
                    "planted_pairs_grouped": round(found / copies, 4),
                    "groups": len(groups),
                    "grouped_not_planted": sum(1 for i in group_of if i not in planted),
                }
            )
            print(_json.dumps(out["runs"][-1]), flush=True)
    finally:
        store.close()
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("threshold")
    t.add_argument("--model", default="local-dir:models/glimpse-icons-distil")
    t.add_argument("--photos", type=Path, default=PHOTOS)
    t.add_argument("--icons", type=Path, default=ICONS)
    t.add_argument("--n-icons", type=int, default=400)
    q = sub.add_parser("quality")
    q.add_argument("--out", type=Path, default=Path("bench-data/dupes-quality"))
    q.add_argument("--model", default="local-dir:models/glimpse-icons-distil")
    q.add_argument("--thresholds", default="0.80,0.85,0.90,0.96")
    q.add_argument("--limits", default="0.3,0.4,0.5")
    q.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("cost")
    c.add_argument("--n", type=int, default=100_000)
    c.add_argument("--home", type=Path, default=Path("/tmp/glimpse-synth-dupes"))
    c.add_argument("--threshold", type=float, default=None, help="candidate cosine (default: the finder's)")
    c.add_argument(
        "--nprobe",
        default="1,2,4,8,0",
        help="lists searched per image; 0: the nprobe tuned for queries; -1: all pairs (exact index only)",
    )
    c.add_argument("--copies", type=int, default=None, help="planted near-copies (default 1%% of --n)")
    args = ap.parse_args()
    if args.cmd == "threshold":
        out = measure_threshold(args.model, args.photos, args.icons, args.n_icons)
    elif args.cmd == "quality":
        out = measure_quality(
            args.out,
            args.model,
            [float(x) for x in args.thresholds.split(",")],
            [float(x) for x in args.limits.split(",")],
            args.seed,
        )
    else:
        nprobes = [int(x) for x in args.nprobe.split(",")]
        from search.vectors.duplicates import DEFAULT_THRESHOLD

        threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        out = measure_cost(args.n, args.home, threshold, nprobes, args.copies or max(1, args.n // 100))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
