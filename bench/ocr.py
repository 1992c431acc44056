"""Text inside images (issue 26): our own generated corpus, the reader's quality and its cost.

    python -m bench.ocr make DIR [--scale 1]     # the corpus: DIR/images/*, DIR/truth.json
    python -m bench.ocr quality DIR              # read it (our stage's pool) into a store; word / code-prefix
                                                 # R@10 through the store's text read, absent words, the cut
    python -m bench.ocr cost DIR                 # images/s per core: ours against RapidOCR's own pipeline on
                                                 # the same images; 1-thread workers against one 2-thread one
    python -m bench.ocr fts DIR [--rows 100000]  # unicode61 + prefix queries against trigram: size, query time
    python -m bench.ocr api DIR [--home H]       # the corpus indexed by `glimpse index --ocr` (the product's
                                                 # model), then queried through the HTTP API's routes:
                                                 # word / code-prefix R@10, absent words, modes auto and keywords
    python -m bench.ocr speed DIR [--rows 100000] [--home H]  # query p50 with text in the keyword index
                                                 # against without, at that many images (a synthetic home,
                                                 # and its copy given the texts the api home read)

The corpus is rendered here, with the system's TrueType fonts (DejaVu, Liberation) on photos and drawings
from /work/shared/data/corpora, and is never a fixture of the tests: small-font screenshots (1920 and 2560
wide), signs on photos, captioned drawings, codes and plates, rotated text (180°, 90° by EXIF orientation,
a tilt of up to 15°), and images without text. Each text image holds query words of its own, drawn from the
corpus captions' vocabulary; "absent" words come from the same vocabulary and are in no image.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DATA = Path(os.environ.get("GLIMPSE_BENCH_DATA", "/work/shared/data/corpora"))
FONTS = sorted(
    f
    for f in glob.glob("/usr/share/fonts/truetype/*/*.ttf")
    if re.search(r"(DejaVu|Liberation)(Sans|Serif|Mono)", os.path.basename(f)) and "ExtraLight" not in f
)


def vocabulary(seed: int) -> list[str]:
    """Distinct lower-case words of 4-10 letters from the corpus captions, shuffled."""
    words: set[str] = set()
    with open(DATA / "dev.jsonl", encoding="utf-8") as f:
        for line in f:
            for cap in json.loads(line).get("captions", []):
                words.update(w for w in re.findall(r"[a-z]+", cap.lower()) if 4 <= len(w) <= 10)
    out = sorted(words)
    random.Random(seed).shuffle(out)
    return out


def code(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return "".join(rng.choice(letters) for _ in range(2)) + str(rng.randint(1000, 9999)) + rng.choice(letters)


def font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(rng.choice(FONTS), size)


def photos() -> list[Path]:
    """The sample photos, less those that hold text (scikit-image's text, page and logo)."""
    return sorted(p for p in (DATA / "sample-photos" / "images").glob("*") if p.stem not in {"text", "page", "logo"})


def drawings() -> list[Path]:
    return sorted((DATA / "openclipart" / "images").rglob("*.png"))


def photo(rng: random.Random, size=(1024, 768)) -> Image.Image:
    with Image.open(rng.choice(photos())) as im:
        return im.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def drawing(rng: random.Random, side: int = 800) -> Image.Image:
    with Image.open(rng.choice(drawings())) as im:
        im = im.convert("RGBA")
        im.thumbnail((side - 80, side - 160))
        canvas = Image.new("RGB", (side, side), "white")
        canvas.paste(im, ((side - im.width) // 2, 40), im)
        return canvas


def screenshot(rng: random.Random, words: list[str], filler: list[str]) -> Image.Image:
    """A desktop screenshot: a sidebar and rows of 11-14 px text; the query words sit among filler words."""
    w, h = rng.choice([(2560, 1440), (1920, 1080)])
    img = Image.new("RGB", (w, h), rng.choice([(250, 250, 250), (32, 33, 36), (240, 244, 248)]))
    dark = sum(img.getpixel((0, 0))) < 300
    ink = (230, 230, 230) if dark else (30, 30, 30)
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 260, h], fill=(60, 64, 72) if dark else (225, 228, 232))
    size = rng.randint(11, 14)
    f = font(rng, size)
    slots = rng.sample(range(40), len(words))
    for row in range(40):
        line = [rng.choice(filler) for _ in range(rng.randint(4, 9))]
        if row in slots:
            line.insert(rng.randrange(len(line)), words[slots.index(row)])
        d.text((300, 40 + row * (size + 12)), " ".join(line), fill=ink, font=f)
    return img


def sign(rng: random.Random, words: list[str]) -> Image.Image:
    img = photo(rng)
    f = font(rng, rng.randint(40, 64))
    text = " ".join(words)
    box = ImageDraw.Draw(img).textbbox((0, 0), text, font=f)
    board = Image.new("RGBA", (box[2] + 40, box[3] + 40), rng.choice([(20, 90, 40), (200, 30, 30), (250, 250, 240)]))
    fg = (30, 30, 30) if board.getpixel((0, 0))[0] > 240 else (255, 255, 255)
    ImageDraw.Draw(board).text((20, 20 - box[1] // 2), text, fill=fg, font=f)
    board = board.rotate(rng.uniform(-8, 8), expand=True, resample=Image.Resampling.BICUBIC)
    x = rng.randint(0, max(0, img.width - board.width))
    y = rng.randint(0, max(0, img.height - board.height))
    img.paste(board, (x, y), board)
    return img


def captioned(rng: random.Random, words: list[str]) -> Image.Image:
    img = drawing(rng)
    f = font(rng, rng.randint(28, 40))
    ImageDraw.Draw(img).text((40, img.height - 100), " ".join(words), fill="black", font=f)
    return img


def plate(rng: random.Random, text: str) -> Image.Image:
    img = photo(rng) if rng.random() < 0.5 else Image.new("RGB", (800, 400), (200, 200, 200))
    f = font(rng, rng.randint(48, 72))
    box = ImageDraw.Draw(img).textbbox((0, 0), text, font=f)
    p = Image.new("RGB", (box[2] + 50, box[3] + 40), rng.choice([(250, 210, 0), (250, 250, 250)]))
    pd = ImageDraw.Draw(p)
    pd.rectangle([2, 2, p.width - 3, p.height - 3], outline="black", width=4)
    pd.text((25, 20 - box[1] // 2), text, fill="black", font=f)
    img.paste(p, ((img.width - p.width) // 2, (img.height - p.height) // 2))
    return img


def make(out: Path, scale: float = 1.0, seed: int = 26) -> dict:
    """Render the corpus; returns its truth: {file: {"words": [...], "codes": [...]}} and the absent words."""
    rng = random.Random(seed)
    vocab = vocabulary(seed)
    filler, vocab = vocab[:300], vocab[300:]  # filler words are never queried
    absent = vocab[:200]
    pool = iter(vocab[200:])
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth: dict = {"images": {}, "absent": absent}

    def n(k: int) -> int:
        return max(1, round(k * scale))

    def save(name: str, img: Image.Image, words=(), codes=(), exif_orientation: int | None = None) -> None:
        if exif_orientation:
            exif = Image.Exif()
            exif[0x0112] = exif_orientation
            img.save(images / name, quality=92, exif=exif)
        else:
            img.save(images / name, **({"quality": 90} if name.endswith(".jpg") else {}))
        truth["images"][name] = {"words": list(words), "codes": list(codes)}

    for i in range(n(20)):
        ws = [next(pool) for _ in range(3)]
        save(f"screenshot_{i:03d}.png", screenshot(rng, ws, filler), ws)
    for i in range(n(40)):
        ws = [next(pool) for _ in range(rng.randint(1, 2))]
        save(f"sign_{i:03d}.jpg", sign(rng, ws), ws)
    for i in range(n(40)):
        ws = [next(pool) for _ in range(rng.randint(1, 2))]
        save(f"drawing_{i:03d}.png", captioned(rng, ws), ws)
    for i in range(n(40)):
        c = code(rng)
        save(f"plate_{i:03d}.jpg", plate(rng, c), codes=[c])
    for i in range(n(30)):
        ws = [next(pool) for _ in range(2)]
        kind = i % 3
        img = captioned(rng, ws) if i % 2 else sign(rng, ws)
        if kind == 0:
            save(f"rot180_{i:03d}.jpg", img.rotate(180), ws)
        elif kind == 1:  # stored sideways, upright by its EXIF orientation
            save(f"exif90_{i:03d}.jpg", img.rotate(90, expand=True), ws, exif_orientation=6)
        else:
            save(f"tilt_{i:03d}.jpg", img.rotate(rng.uniform(-15, 15), expand=True, fillcolor="white"), ws)
    for i in range(n(50)):
        save(f"photo_{i:03d}.jpg", photo(rng, rng.choice([(1024, 768), (768, 1024), (640, 480)])))
    for i in range(n(30)):
        save(f"plain_drawing_{i:03d}.png", drawing(rng))
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


# ------------------------------------------------------------------ reading


def read_corpus(folder: Path, workers: int, threads: int = 1) -> tuple[dict[str, list], float]:
    """Every image through our stage's pool: {name: [TextLine...]}, and the wall seconds (after start-up)."""
    from indexer.ocr_pool import OcrPool

    names = sorted(os.listdir(folder / "images"))
    out: dict[str, list] = {}
    with OcrPool(workers, 600, threads) as pool:
        t0 = None
        for got in pool.map((n, str(folder / "images" / n)) for n in names):
            t0 = t0 or time.perf_counter()  # the first result: workers are up (start-up is not throughput)
            out[got.key] = got.lines if got.error is None else []
            if got.error:
                print("error", got.key, got.error, file=sys.stderr)
        took = time.perf_counter() - (t0 or time.perf_counter())
    return out, took


def store_with(folder: Path, lines: dict[str, list], min_confidence: float, db: Path):
    """A store holding one indexed row per corpus image and its text, as the stage writes them."""
    from search.store.database import Store
    from search.store.ocr import OcrResult
    from search.store.schema import ImageRow

    store = Store(db)
    names = sorted(lines)
    with store.session() as s, s.begin():
        for i, name in enumerate(names, 1):
            s.add(ImageRow(id=i, path=str(folder / "images" / name), size=1, mtime=float(i), content_hash=str(i)))
    results = [OcrResult(i, str(i), lines[name]) for i, name in enumerate(names, 1)]
    for k in range(0, len(results), 16):
        store.set_ocr_results("bench", results[k : k + 16], min_confidence)
    return store, {name: i for i, name in enumerate(names, 1)}


def recall(store, ids: dict[str, int], truth: dict) -> dict:
    from search.store.ocr import text_match

    def top(words: list[str]) -> list[int]:
        match = text_match(words)
        return [i for i, _ in store.text_ranking(match, 10)] if match else []

    per_kind: dict[str, list[int]] = {}
    codes: list[int] = []
    for name, t in truth["images"].items():
        kind = name.rsplit("_", 1)[0]
        for w in t["words"]:
            per_kind.setdefault(kind, []).append(int(ids[name] in top([w])))
        for c in t["codes"]:
            codes.append(int(ids[name] in top([c[:5]])))
    absent = [int(bool(top([w]))) for w in truth["absent"]]
    words = [h for hits in per_kind.values() for h in hits]
    return {
        "word_r10": sum(words) / len(words),
        "word_queries": len(words),
        "by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(per_kind.items())},
        "code_prefix_r10": sum(codes) / len(codes),
        "code_queries": len(codes),
        "absent_with_results": sum(absent) / len(absent),
        "absent_queries": len(absent),
    }


def quality(folder: Path, workers: int) -> dict:
    from indexer.ocr import MIN_CONFIDENCE

    truth = json.loads((folder / "truth.json").read_text())
    lines, took = read_corpus(folder, workers)
    (folder / "lines.json").write_text(
        json.dumps({k: [[ln.text, ln.confidence] for ln in v] for k, v in lines.items()}, indent=0)
    )
    no_text = [n for n, t in truth["images"].items() if not t["words"] and not t["codes"]]
    noise = sorted(ln.confidence for n in no_text for ln in lines[n])
    out: dict = {
        "images": len(lines),
        "seconds": round(took, 1),
        "noise_lines_on_images_without_text": len(noise),
        "noise_confidences": [round(c, 3) for c in noise],
        "cuts": {},
    }
    for cut in (0.5, 0.7, MIN_CONFIDENCE, 0.9):
        with tempfile.TemporaryDirectory() as tmp:
            store, ids = store_with(folder, lines, cut, Path(tmp) / "g.db")
            out["cuts"][str(cut)] = recall(store, ids, truth)
            store.close()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "g.db"
        empty, _ = store_with(folder, {k: [] for k in lines}, MIN_CONFIDENCE, db)
        empty.close()
        with sqlite3.connect(db) as con:
            con.execute("VACUUM")
        before = db.stat().st_size
        db.unlink()
        store, _ = store_with(folder, lines, MIN_CONFIDENCE, db)
        store.close()
        with sqlite3.connect(db) as con:
            con.execute("VACUUM")
        out["sqlite_bytes_per_image"] = round((db.stat().st_size - before) / len(lines))
    return out


# ------------------------------------------------------------------ cost


def _rapidocr_own(paths: list[str]) -> float:
    """RapidOCR's own pipeline, one thread, given the file: its loader (EXIF applied) and its sizes.
    Returns the process's CPU seconds (one thread: the work itself, whatever else the machine runs)."""
    from rapidocr import RapidOCR

    from indexer.ocr_read import KEEP_SCORE

    ocr = RapidOCR(
        params={
            "Global.log_level": "error",
            "Global.text_score": KEEP_SCORE,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )
    ocr(paths[0])  # model load
    t = time.process_time()
    for p in paths:
        ocr(p)
    return time.process_time() - t


def _ours(paths: list[str]) -> float:
    from indexer.ocr_read import TextReader

    reader = TextReader(1)
    reader.read(paths[0])
    t = time.process_time()
    for p in paths:
        reader.read(p)
    return time.process_time() - t


def cost(folder: Path, per_kind: int, rounds: int, only: set[str] | None = None) -> dict:
    """Per core, one process each, same images: ours and RapidOCR's own, interleaved rounds (median of
    CPU seconds: both run one thread, so a busy machine slows neither's CPU time much)."""
    import subprocess

    names = sorted(os.listdir(folder / "images"))
    kinds: dict[str, list[str]] = {}
    for n in names:
        kind = n.split("_")[0]
        kinds.setdefault(kind if kind in ("screenshot", "photo") else "other text", []).append(n)
    out: dict = {}
    for kind, group in kinds.items():
        if only and kind not in only:
            continue
        paths = [str(folder / "images" / n) for n in group[:: max(1, len(group) // per_kind)][:per_kind]]
        times: dict[str, list[float]] = {"ours": [], "rapidocr": []}
        for _ in range(rounds):
            for who in ("ours", "rapidocr"):
                fn = "_ours" if who == "ours" else "_rapidocr_own"
                code = f"import json,sys; from bench.ocr import {fn} as f; print(f(json.loads(sys.argv[1])))"
                res = subprocess.run(
                    [sys.executable, "-c", code, json.dumps(paths)], capture_output=True, text=True, check=True
                )
                times[who].append(float(res.stdout.strip().splitlines()[-1]))
        ours, theirs = statistics.median(times["ours"]), statistics.median(times["rapidocr"])
        out[kind] = {
            "images": len(paths),
            "ours_img_per_cpu_s": round(len(paths) / ours, 3),
            "rapidocr_img_per_cpu_s": round(len(paths) / theirs, 3),
            "ratio": round(theirs / ours, 3),
            "runs": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        }
    return out


def workers_trial(folder: Path, n: int) -> dict:
    """The same n images: 2 single-thread workers against 1 worker of 2 threads (wall, after start-up)."""
    names = sorted(os.listdir(folder / "images"))[:: max(1, len(os.listdir(folder / "images")) // n)][:n]
    sub = Path(tempfile.mkdtemp()) / "images"
    sub.mkdir()
    for name in names:
        os.symlink(folder / "images" / name, sub / name)
    out = {}
    for workers, threads in ((2, 1), (1, 2)):
        _, took = read_corpus(sub.parent, workers, threads)
        out[f"{workers}x{threads}"] = {"seconds": round(took, 2), "img_s": round(len(names) / took, 3)}
    return out


# ------------------------------------------------------------------ tokenizer


def fts_trial(folder: Path, rows: int) -> dict:
    """unicode61 with prefix queries against trigram: index size and query time over ``rows`` texts."""
    from search.store.ocr import text_match

    lines = json.loads((folder / "lines.json").read_text())
    texts = [" ".join(t for t, c in v if c >= 0.8) for v in lines.values()]
    texts = [t for t in texts if t] or ["empty"]
    truth = json.loads((folder / "truth.json").read_text())
    queries = [c[:5] for t in truth["images"].values() for c in t["codes"]] + [
        w for t in truth["images"].values() for w in t["words"]
    ][:100]
    out = {}
    for name, tok, make_match in (
        ("unicode61+prefix", "unicode61 remove_diacritics 2", lambda q: text_match([q])),
        ("trigram", "trigram", lambda q: '"' + q + '"'),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "f.db"
            con = sqlite3.connect(db)
            con.execute(f"CREATE VIRTUAL TABLE t USING fts5(text, tokenize='{tok}')")
            rng = random.Random(1)
            con.executemany(
                "INSERT INTO t(rowid, text) VALUES (?, ?)", ((i, rng.choice(texts)) for i in range(1, rows + 1))
            )
            con.commit()
            con.execute("INSERT INTO t(t) VALUES ('optimize')")
            con.commit()
            con.execute("VACUUM")
            size = sum(r[0] for r in con.execute("SELECT pgsize FROM dbstat WHERE name LIKE 't_%' OR name = 't'"))
            times = []
            for q in queries:
                t = time.perf_counter()
                con.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY rank LIMIT 10", (make_match(q),)).fetchall()
                times.append(time.perf_counter() - t)
            con.close()
        out[name] = {
            "index_bytes": size,
            "bytes_per_row": round(size / rows, 1),
            "query_ms_p50": round(statistics.median(times) * 1000, 2),
            "query_ms_p95": round(sorted(times)[int(0.95 * (len(times) - 1))] * 1000, 2),
        }
    return out


# ------------------------------------------------------------------ through the API

PRODUCT_MODEL = "local-dir:models/glimpse-icons-distil"  # what the demo and the front door index with


def index_home(folder: Path, home: Path, model: str) -> dict:
    """``glimpse index DIR/images --ocr`` into ``home`` (once; kept for the next mode), and its last job."""
    import subprocess

    if not (home / "glimpse.db").exists():
        env = dict(os.environ, GLIMPSE_HOME=str(home), GLIMPSE_OCR="on", HF_HUB_OFFLINE="1")
        cmd = [sys.executable, "-m", "glimpse.cli", "index", str(folder / "images"), "--model", model, "--ocr"]
        subprocess.run(cmd, env=env, check=True, cwd=Path(__file__).resolve().parent.parent)
    from search.engine import Engine
    from search.paths import Paths

    engine = Engine(Paths.resolve(home))
    try:
        stats = engine.stats()
    finally:
        engine.close()
    job = stats["jobs"][0]
    return {
        "ocr": stats["ocr"],
        "job": {k: job.get(k) for k in ("outcome", "embedded", "ocr_read", "ocr_failed", "ocr_seconds")},
    }


def api(folder: Path, home: Path, model: str) -> dict:
    """Every truth word, code prefix and absent word as ``GET /api/search?q=…&min_score=auto&k=10`` through
    the app's routes (Flask's test client: the real handlers, no socket), in modes auto and keywords."""
    from search.paths import Paths
    from web.app import create_app

    truth = json.loads((folder / "truth.json").read_text())
    out: dict = {"index": index_home(folder, home, model)}
    client = create_app(Paths.resolve(home), config={"GLIMPSE_ALLOWED_HOSTS": ["localhost"]}).test_client()
    for mode in ("auto", "keywords"):
        times: list[float] = []

        def top(q: str, mode: str = mode, times: list[float] = times) -> list[str]:
            t0 = time.perf_counter()
            resp = client.get("/api/search", query_string={"q": q, "mode": mode, "k": 10, "min_score": "auto"})
            times.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.get_data(as_text=True)
            return [os.path.basename(r["path"]) for r in resp.get_json()["results"]]

        per_kind: dict[str, list[int]] = {}
        codes: list[int] = []
        for name, t in sorted(truth["images"].items()):
            kind = name.rsplit("_", 1)[0]
            for w in t["words"]:
                per_kind.setdefault(kind, []).append(int(name in top(w)))
            for c in t["codes"]:
                codes.append(int(name in top(c[:5])))
        absent = [len(top(w)) for w in truth["absent"]]
        words = [h for hits in per_kind.values() for h in hits]
        out[mode] = {
            "word_r10": round(sum(words) / len(words), 4),
            "word_queries": len(words),
            "by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(per_kind.items())},
            "code_prefix_r10": round(sum(codes) / len(codes), 4),
            "code_queries": len(codes),
            "absent_with_results": round(sum(1 for n in absent if n) / len(absent), 4),
            "absent_queries": len(absent),
            "absent_results_mean": round(statistics.mean(absent), 2),
            "query_ms_p50": round(statistics.median(times) * 1000, 2),
        }
    return out


def speed(folder: Path, home: Path, rows: int, rounds: int, texts: str = "mixed") -> dict:
    """Query p50 with text in the keyword index against without, at ``rows`` images: a synthetic home
    (bench.synth) as it is (no text read: GLIMPSE_OCR=off), and a copy of it given the texts the api home
    read: ``mixed``, half the images hold lines of one to three of them; ``cycled``, every image holds one
    whole text, so each text is in some 570 images (the worst case: exact bm25 ties).
    Queried in-process as the API does (``Engine.search``, k=10, min_score=auto), the two homes
    interleaved query by query, each its own engine, every query asked once of each."""
    import shutil

    from bench.synth import synth_home
    from search.engine import Engine
    from search.paths import Paths
    from search.query.kinds import Filters, Paging, TextQuery
    from search.store.database import Store
    from search.store.ocr import OcrResult, engine_id
    from search.vectors.live import configure_query_threads

    truth = json.loads((folder / "truth.json").read_text())
    src = Store(home / "glimpse.db")
    read = [r for r in src.text_of(list(range(1, 100_000))).values() if r.lines]
    src.close()
    without = Path("bench-data/homes") / f"ocr-{rows}"
    synth_home(without, rows)
    with_text = Path("bench-data/homes") / f"ocr-{rows}-{texts}"
    if not (with_text / "done").exists():
        shutil.rmtree(with_text, ignore_errors=True)
        shutil.copytree(without, with_text, symlinks=True)
        store = Store(with_text / "glimpse.db")
        ids = [i for (i,) in sqlite3.connect(with_text / "glimpse.db").execute("SELECT id FROM images ORDER BY id")]
        rng = random.Random(26)

        def mixed() -> list:
            """Lines of one to three of the corpus's texts (a random part of each): texts of many lengths,
            so bm25 ties are as rare as in a real collection."""
            out: list = []
            for r in rng.sample(read, rng.randint(1, 3)):
                out += rng.sample(list(r.lines), rng.randint(1, len(r.lines)))
            return out

        for k in range(0, len(ids), 1000):
            chunk = ids[k : k + 1000]
            if texts == "cycled":
                batch = [OcrResult(i, None, read[(k + j) % len(read)].lines) for j, i in enumerate(chunk)]
            else:  # half the images hold text
                batch = [OcrResult(i, None, mixed() if rng.random() < 0.5 else ()) for i in chunk]
            store.set_ocr_results(engine_id() or "bench", batch, 0.8)
        store.close()
        (with_text / "done").write_text("ok")
    store = Store(with_text / "glimpse.db")
    counts = store.ocr_counts(None)
    store.close()
    with sqlite3.connect(with_text / "glimpse.db") as con:
        ocr_bytes = con.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'ocr_fts%' OR name = 'ocr_images'"
        ).fetchone()[0]
    configure_query_threads()
    engines = {"with": Engine(Paths.resolve(with_text)), "without": Engine(Paths.resolve(without))}
    for e in engines.values():
        e.warm()
    words = sorted({w for t in truth["images"].values() for w in t["words"]} | set(truth["absent"]))
    random.Random(26).shuffle(words)
    out: dict = {"rows": rows, "texts": texts, "ocr_rows": counts, "ocr_sqlite_mb": round(ocr_bytes / 2**20, 1)}
    try:
        for mode in ("keywords", "auto"):
            times: dict[str, list[float]] = {"with": [], "without": []}
            for n, q in enumerate(words[: 60 * rounds]):
                for arm in ("with", "without") if n % 2 == 0 else ("without", "with"):
                    t0 = time.perf_counter()
                    engines[arm].search(TextQuery(q, mode=mode), Filters(min_score_auto=True), Paging(k=10))
                    times[arm].append(time.perf_counter() - t0)
            out[mode] = {
                arm: {
                    "p50_ms": round(statistics.median(t) * 1000, 2),
                    "p95_ms": round(sorted(t)[int(0.95 * (len(t) - 1))] * 1000, 2),
                    "queries": len(t),
                }
                for arm, t in times.items()
            }
    finally:
        for e in engines.values():
            e.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["make", "quality", "cost", "workers", "fts", "api", "speed"])
    ap.add_argument("--home", type=Path, default=None, help="api/speed: the home the corpus is indexed into")
    ap.add_argument("--model", default=PRODUCT_MODEL)
    ap.add_argument("--texts", choices=["mixed", "cycled"], default="mixed", help="speed: the texts given")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--per-kind", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument(
        "--kinds", default=None, help="cost: only these kinds (screenshot, photo, other text), comma-separated"
    )
    args = ap.parse_args(argv)
    if args.what == "make":
        truth = make(args.folder, args.scale)
        res: dict = {"images": len(truth["images"])}
    elif args.what == "quality":
        from indexer.ocr_pool import ocr_cores

        res = quality(args.folder, args.workers or ocr_cores())
    elif args.what == "cost":
        res = cost(args.folder, args.per_kind, args.rounds, set(args.kinds.split(",")) if args.kinds else None)
    elif args.what == "workers":
        res = workers_trial(args.folder, args.per_kind)
    elif args.what in ("api", "speed"):
        home = args.home or args.folder / "home"
        res = (
            api(args.folder, home, args.model)
            if args.what == "api"
            else speed(args.folder, home, args.rows, args.rounds)
        )
    else:
        res = fts_trial(args.folder, args.rows)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
