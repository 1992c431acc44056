"""What indexing videos costs (issue 27): time and frames kept per hour of video, SQLite and FAISS bytes
per hour, and the no-op reindex reading no video.

    python bench/video_index.py [--videos 10] [--minutes 6] [--model local-dir:models/glimpse-icons-distil]
                                [--out bench-data/video_index.json]

Videos are generated once into bench-data/video_index/ (kept between runs): 640x360 at 15 fps, H.264
(x264 ``veryfast``, CRF 23), scenes of 5-40 s each showing one picture from /work/shared/data (a sample
photo, or an Openclipart drawing on a coloured backdrop) that pans slowly, so a scene is moving footage and
not one frame repeated. Half the videos have a keyframe every 2 s and none at the cuts (a phone), half
x264's defaults (a keyframe at each cut, at most every 250 frames).

The run is in this process, through ``indexer.pipeline.run_job`` as ``glimpse index`` calls it: a new home,
an empty folder indexed first (the baseline database and index sizes), then the video folder; the figures
are the differences. CPU is this process and its reaped children (the video worker processes). The no-op
reindex counts the videos opened or hashed (``read_video``/``video_hash`` wrapped) and this process's
``rchar`` (bytes through read(2), page cache or not) while it runs, against the videos' total size.
"""

from __future__ import annotations

import argparse
import fractions
import json
import logging
import os
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import av
from PIL import Image

from bench.sysinfo import git_rev, loadavg, machine

DATA = Path("/work/shared/data/corpora")
REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench-data" / "video_index"
W, H, FPS = 640, 360, 15


def _pictures(rng: random.Random, n: int) -> list[Image.Image]:
    """``n`` pictures 20% larger than a frame (room to pan): sample photos and drawings on backdrops."""
    photos = sorted((DATA / "sample-photos" / "images").glob("*"))
    drawings = sorted((DATA / "openclipart").rglob("*.png"))
    out = []
    for i in range(n):
        if i % 3 == 0 and photos:
            im = Image.open(rng.choice(photos)).convert("RGB")
        else:
            im = Image.new("RGB", (W, H), tuple(rng.randrange(40, 230) for _ in range(3)))
            with Image.open(rng.choice(drawings)) as d:
                d = d.convert("RGBA")
                d.thumbnail((int(H * 0.8), int(H * 0.8)))
                im.paste(d, ((W - d.width) // 2, (H - d.height) // 2), d)
        out.append(im.resize((int(W * 1.2), int(H * 1.2)), Image.Resampling.BILINEAR))
    return out


def scenes_of(seconds: float, rng: random.Random) -> list[tuple[float, float]]:
    """The scenes of a video as (start, end) seconds: the first draws of its ``rng``."""
    scenes: list[tuple[float, float]] = []
    t = 0.0
    while t < seconds:
        length = min(seconds - t, rng.uniform(5, 40))
        scenes.append((t, t + length))
        t += length
    return scenes


def write_video(path: Path, seconds: float, seed: int, phone: bool) -> list[tuple[float, float]]:
    """One video of ``seconds``; returns its scenes as (start, end) seconds."""
    rng = random.Random(seed)
    scenes = scenes_of(seconds, rng)
    pictures = _pictures(rng, len(scenes))
    tmp = path.with_suffix(".part.mp4")
    out = av.open(str(tmp), "w", format="mp4")
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    params = "keyint=30:min-keyint=30:scenecut=0" if phone else "keyint=250"
    stream.codec_context.options = {"preset": "veryfast", "crf": "23", "x264-params": params}
    i = 0
    for (start, end), pic in zip(scenes, pictures):
        a = np.asarray(pic)
        n = round((end - start) * FPS)
        dx, dy = a.shape[1] - W, a.shape[0] - H
        for k in range(n):
            x = round(dx * k / max(1, n - 1))
            y = round(dy * k / max(1, n - 1) / 2)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[y : y + H, x : x + W]), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            i += 1
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    tmp.rename(path)
    return scenes


def corpus(videos: int, minutes: float) -> tuple[Path, float]:
    folder = OUT_DIR / f"{videos}x{minutes:g}min"
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        path = folder / f"clip{v:02d}.mp4"
        if not path.exists():
            t0 = time.perf_counter()
            write_video(path, minutes * 60, seed=v, phone=v % 2 == 0)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f}s", flush=True)
    return folder, videos * minutes * 60


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _sizes(home: Path) -> tuple[int, int, int]:
    """(bytes in use in the database, of which the frames table and its indexes, live index version bytes)."""
    con = sqlite3.connect(home / "glimpse.db")
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        used = con.execute("SELECT sum(pgsize - unused) FROM dbstat").fetchone()[0] or 0
        q = (
            "SELECT sum(pgsize - unused) FROM dbstat "
            "WHERE name IN ('frames', 'ix_frames_video_time', 'ix_frames_vector_seq')"
        )
        frames = con.execute(q).fetchone()[0] or 0
    finally:
        con.close()
    from search.vectors.versions import IndexDir

    version = IndexDir(home / "index").current_version()
    return used, frames, _tree_bytes(home / "index" / version) if version else 0


def _scene_coverage(home: Path, seconds: float) -> tuple[int, int]:
    """(scenes with at least one kept frame inside them, scenes), over every video of the corpus."""
    con = sqlite3.connect(home / "glimpse.db")
    try:
        q = "SELECT i.path, f.time FROM frames f JOIN images i ON i.id = f.video_id"
        times: dict[int, list[float]] = {}
        for path, t in con.execute(q):
            times.setdefault(int(Path(path).stem[4:]), []).append(t)
    finally:
        con.close()
    covered = total = 0
    for v, kept in times.items():
        for start, end in scenes_of(seconds, random.Random(v)):
            total += 1
            covered += any(start - 0.01 <= t < end for t in kept)
    return covered, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument(
        "--model", default=f"local-dir:{Path(__file__).resolve().parent.parent / 'models' / 'glimpse-icons-distil'}"
    )
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=str(OUT_DIR.parent / "video_index.json"))
    args = ap.parse_args()
    os.environ.setdefault("GLIMPSE_OCR", "off")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import indexer.hashing
    import indexer.video_read
    from indexer.pipeline import Options, run_job
    from search.paths import Paths

    folder, seconds = corpus(args.videos, args.minutes)
    hours = seconds / 3600
    video_bytes = sum(p.stat().st_size for p in folder.glob("*.mp4"))
    work = Path(tempfile.mkdtemp(prefix="glimpse-video-bench-"))
    try:
        home, empty = work / "home", work / "empty"
        empty.mkdir()
        os.environ["GLIMPSE_HOME"] = str(home)
        opts = Options(model=args.model, workers=args.workers)
        run_job(Paths.resolve(home), [str(empty)], opts)
        db0, fr0, ix0 = _sizes(home)

        t0, c0 = time.perf_counter(), _cpu()
        counts, _ = run_job(Paths.resolve(home), [str(empty), str(folder)], opts)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        db1, fr1, ix1 = _sizes(home)
        covered, scenes = _scene_coverage(home, args.minutes * 60)

        opened: list[str] = []
        real_read, real_hash = indexer.video_read.read_video, indexer.hashing.video_hash

        def read_video(path, limits=None):
            opened.append(str(path))
            return real_read(path, limits)

        def video_hash(path):
            opened.append(str(path))
            return real_hash(path)

        indexer.video_read.read_video = read_video
        indexer.video_read.video_hash = indexer.hashing.video_hash = video_hash
        r0, t1 = _rchar(), time.perf_counter()
        noop, _ = run_job(Paths.resolve(home), None, Options(kind="reindex", workers=args.workers))
        noop_s, noop_read = time.perf_counter() - t1, _rchar() - r0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    row = {
        "commit": git_rev(),
        "machine": machine(),
        "load": loadavg(),
        "videos": args.videos,
        "hours": hours,
        "video_bytes": video_bytes,
        "model": args.model,
        "indexed": counts.videos,
        "failed": counts.videos_failed,
        "frames_kept": counts.frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "wall_s_per_hour": wall / hours,
        "cpu_s_per_hour": cpu / hours,
        "frames_per_hour": counts.frames / hours,
        "scenes": scenes,
        "scenes_with_a_kept_frame": covered,
        "sqlite_bytes_per_hour": (db1 - db0) / hours,
        "sqlite_frames_table_bytes_per_hour": (fr1 - fr0) / hours,
        "index_bytes_per_hour": (ix1 - ix0) / hours,
        "noop_s": noop_s,
        "noop_videos_opened": len(opened),
        "noop_read_bytes": noop_read,
        "noop_counts": {"new": noop.new, "changed": noop.changed, "videos": noop.videos, "unchanged": noop.unchanged},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=1))
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
