"""Finding the moment (issue 27): a scene's frame finds its video with the time inside the scene, and a scene's
concept in words finds its video as often as the same concept as a still image.

    python bench/video_search.py [--videos 30] [--scenes 4] [--distractors 400] [--seed 0]
                                 [--model local-dir:models/glimpse-icons-distil] [--out FILE.json]

Composed from /work/shared/data/corpora (dev.jsonl: pictures with their concepts' captions), a distinct concept
per scene: each scene holds one picture on a plain backdrop for 6-10 s (uniform), drifting slowly (a pan of
up to 40 px), so its frames differ; 320x240 at 15 fps, H.264. Half the videos use x264's defaults (a
keyframe at each cut), half a keyframe every 2 s and none at cuts (as phones record). Two homes share the
same distractor pictures (other concepts on backdrops): one holds the videos, the other each scene's
picture as a still image (the scene's first frame), so both targets are searched among the same others.
Both are indexed by the real ``glimpse index --no-ocr`` with the shipped model and the default video settings
(GLIMPSE_VIDEO_DEDUPE, the sampler's scene threshold), or the ones in the environment.

- upload: a frame decoded from the video at a random time inside each scene (away from the cuts by 0.2 s),
  searched as an upload: a hit when the video is in the top 3 with ``time`` inside that scene;
- text: the scene concept's first caption, in ``images`` mode (file names are neutral, so no keyword
  helps either side): the video in the top 10 of the video home, against the still in the top 10 of the
  stills home. The two homes differ in size (the stills home holds 4 stills where the other holds one
  video), so the same is also measured paired in a third home holding the distractors, the videos and the
  stills together: the video in the top 10 with its scene's still left out of the ranking, against the still
  with its video left out (both then face the same others).
- the text figures are also given with the video counted only when its ``time`` lies inside the queried
  scene: a video holds several concepts, and a weak text match may find it by another of its scenes.
  (Counting the scene when it is one of the marked moments instead says nothing here: a video of 4 scenes
  keeps about 4 frames, and its moments list all of them.)
"""

from __future__ import annotations

import argparse
import fractions
import io
import json
import os
import random
import subprocess
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
W, H, FPS = 320, 240, 15
PICTURE = 150  # the picture's size on the backdrop
DRIFT = 40  # pixels a scene's picture moves from its first frame to its last


def concepts(rng: random.Random, n: int) -> list[dict]:
    """``n`` pictures of distinct concepts (dev.jsonl groups), each with its captions."""
    by_group: dict[str, dict] = {}
    with open(DATA / "dev.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row.get("captions") and (DATA / row["path"]).is_file():
                by_group.setdefault(row["group"], row)
    groups = sorted(by_group)
    rng.shuffle(groups)
    return [by_group[g] for g in groups[:n]]


def backdrop(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(60, 240) for _ in range(3))  # type: ignore[return-value]


def composed(picture: Image.Image, colour: tuple[int, int, int], offset: tuple[float, float]) -> Image.Image:
    """The picture (its alpha respected) on a plain backdrop, its top left corner moved by ``offset``."""
    frame = Image.new("RGB", (W, H), colour)
    x = int((W - PICTURE) / 2 - DRIFT / 2 + offset[0])
    y = int((H - PICTURE) / 2 - DRIFT / 4 + offset[1])
    frame.paste(picture, (x, y), picture if picture.mode == "RGBA" else None)
    return frame


def load_picture(row: dict) -> Image.Image:
    with Image.open(DATA / row["path"]) as im:
        im = im.convert("RGBA")
        im.thumbnail((PICTURE, PICTURE), Image.Resampling.LANCZOS)
        return im.copy()


def write_video(path: Path, scenes: list[tuple[Image.Image, tuple[int, int, int], float]], phone: bool) -> None:
    """Each scene ``(picture, backdrop, seconds)`` drifting right and down; a cut between scenes."""
    out = av.open(str(path), "w", format="mp4")
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    params = {"preset": "veryfast", "crf": "23"}
    if phone:
        params["x264-params"] = f"keyint={2 * FPS}:min-keyint={2 * FPS}:scenecut=0"
    stream.codec_context.options = params
    i = 0
    for picture, colour, seconds in scenes:
        n = round(seconds * FPS)
        for k in range(n):
            step = k / max(1, n - 1)
            frame = av.VideoFrame.from_ndarray(
                np.asarray(composed(picture, colour, (DRIFT * step, DRIFT / 2 * step))), format="rgb24"
            )
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            i += 1
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()


def index(folder: Path, home: Path, model: str) -> float:
    """``glimpse index`` as a user runs it; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "index", str(folder), "--model", model, "--no-ocr"],
        env=dict(os.environ, GLIMPSE_HOME=str(home)),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--distractors", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=f"local-dir:{REPO / 'models' / 'glimpse-icons-distil'}")
    ap.add_argument("--out", default=None)
    ap.add_argument("--work", default=None, help="folder for the corpus and homes (default: a temporary one)")
    args = ap.parse_args()

    from search.engine import Engine
    from search.media.video import frame_at
    from search.paths import Paths
    from search.query.kinds import ImageQuery, Paging, TextQuery

    rng = random.Random(args.seed)
    n_scenes = args.videos * args.scenes
    rows = concepts(rng, n_scenes + args.distractors)
    scene_rows, other_rows = rows[:n_scenes], rows[n_scenes:]
    work = Path(args.work or tempfile.mkdtemp(prefix="video-search-"))
    videos_dir, stills_dir, mixed_dir = work / "media-videos", work / "media-stills", work / "media-mixed"
    for d in (videos_dir, stills_dir, mixed_dir):
        d.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(other_rows):  # the same distractors in both homes
        img = composed(load_picture(row), backdrop(rng), (rng.uniform(0, DRIFT), rng.uniform(0, DRIFT / 2)))
        for d in (videos_dir, stills_dir):
            img.save(d / f"other_{n:04d}.png")
    scenes = []  # (video name, scene index, start, end, row)
    for v in range(args.videos):
        name = f"clip_{v:03d}.mp4"
        parts, start = [], 0.0
        for s in range(args.scenes):
            row = scene_rows[v * args.scenes + s]
            picture, colour, seconds = load_picture(row), backdrop(rng), rng.uniform(6.0, 10.0)
            seconds = round(seconds * FPS) / FPS
            parts.append((picture, colour, seconds))
            composed(picture, colour, (0.0, 0.0)).save(stills_dir / f"still_{v * args.scenes + s:04d}.png")
            scenes.append((name, s, start, start + seconds, row))
            start += seconds
        write_video(videos_dir / name, parts, phone=v % 2 == 1)
    total_s = sum(end - start for _, _, start, end, _ in scenes)
    for d in (videos_dir, stills_dir):  # the mixed home: both sets, the distractors once (hard links)
        for f in d.iterdir():
            if not (mixed_dir / f.name).exists():
                os.link(f, mixed_dir / f.name)

    homes = {"videos": work / "home-videos", "stills": work / "home-stills", "mixed": work / "home-mixed"}
    folders = {"videos": videos_dir, "stills": stills_dir, "mixed": mixed_dir}
    index_s = {key: index(folders[key], home, args.model) for key, home in homes.items()}
    engines = {key: Engine(Paths.resolve(str(home))) for key, home in homes.items()}
    vstore = engines["videos"].store
    video_ids = {name: vstore.image_id_for_path(str(videos_dir / name)) for name in {s[0] for s in scenes}}
    still_ids = {
        n: engines["stills"].store.image_id_for_path(str(stills_dir / f"still_{n:04d}.png")) for n in range(n_scenes)
    }
    mixed_ids = {p.name: engines["mixed"].store.image_id_for_path(str(p)) for p in mixed_dir.iterdir()}
    frames_kept = sum(
        len(f.ids) for f in vstore.video_frames(list(video_ids.values()), engines["videos"].encoder.dim).values()
    )

    upload_hits, upload_top3_any, text_video, text_still, misses = 0, 0, 0, 0, []
    paired_video, paired_still, text_moment, paired_moment = 0, 0, 0, 0

    def inside(t: float | None, start: float, end: float) -> bool:
        return t is not None and start - 0.5 / FPS <= t < end

    query_s: list[float] = []
    for n, (name, s, start, end, row) in enumerate(scenes):
        t = rng.uniform(start + 0.2, end - 0.2)
        frame = frame_at(str(videos_dir / name), t, short_side=H)
        began = time.perf_counter()
        page = engines["videos"].search(ImageQuery(png_bytes(frame)), None, Paging(k=3))
        query_s.append(time.perf_counter() - began)
        mine = [r for r in page.results if r.id == video_ids[name]]
        upload_top3_any += bool(mine)
        # a frame's time is its pts: the scene's first frame may be a float's rounding before ``start``
        if mine and mine[0].time is not None and start - 0.5 / FPS <= mine[0].time < end:
            upload_hits += 1
        else:
            misses.append({"video": name, "scene": s, "at": round(t, 2), "start": round(start, 2), "end": round(end, 2),
                           "found": [(r.id == video_ids[name], r.kind, r.time) for r in page.results]})  # fmt: skip
        text = TextQuery(row["captions"][0], mode="images")
        found = [r for r in engines["videos"].search(text, None, Paging(k=10)).results if r.id == video_ids[name]]
        text_video += bool(found)
        text_moment += bool(found) and inside(found[0].time, start, end)
        text_still += still_ids[n] in [r.id for r in engines["stills"].search(text, None, Paging(k=10)).results]
        mixed = engines["mixed"].search(text, None, Paging(k=11)).results
        both = [r.id for r in mixed]
        v_id, s_id = mixed_ids[name], mixed_ids[f"still_{n:04d}.png"]
        paired_video += v_id in [i for i in both if i != s_id][:10]
        shown = [r for r in mixed if r.id != s_id][:10]
        paired_moment += any(r.id == v_id and inside(r.time, start, end) for r in shown)
        paired_still += s_id in [i for i in both if i != v_id][:10]
    out = {
        "machine": machine(),
        "git": git_rev(),
        "load_before": loadavg(),
        "model": args.model,
        "videos": args.videos,
        "scenes": n_scenes,
        "distractors": args.distractors,
        "video_seconds": round(total_s, 1),
        "frames_kept": frames_kept,
        "index_s": {k: round(v, 1) for k, v in index_s.items()},
        "upload_top3_time_in_scene": round(100 * upload_hits / n_scenes, 1),
        "upload_top3_video_any_time": round(100 * upload_top3_any / n_scenes, 1),
        "text_top10_video": round(100 * text_video / n_scenes, 1),
        "text_top10_still": round(100 * text_still / n_scenes, 1),
        "paired_text_top10_video": round(100 * paired_video / n_scenes, 1),
        "paired_text_top10_still": round(100 * paired_still / n_scenes, 1),
        # the video found at the right moment (its time inside the queried scene), not by another scene
        "text_top10_video_time_in_scene": round(100 * text_moment / n_scenes, 1),
        "paired_text_top10_video_time_in_scene": round(100 * paired_moment / n_scenes, 1),
        "upload_query_ms_median": round(1000 * float(np.median(query_s)), 1),
        "settings": {k: os.environ[k] for k in sorted(os.environ) if k.startswith("GLIMPSE_VIDEO")},
        "misses": misses[:20],
        "load_after": loadavg(),
    }
    for eng in engines.values():
        eng.close()
    text_out = json.dumps(out, indent=2)
    print(text_out)
    if args.out:
        Path(args.out).write_text(text_out)


if __name__ == "__main__":
    main()
