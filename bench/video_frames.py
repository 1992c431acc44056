"""Frames per second per core of the video frame sampler (issue 27), against decoding every frame.

    python bench/video_frames.py [--sizes 720,1080] [--gops phone,cuts,long] [--seconds 60] [--rounds 3]
                                 [--methods sampler,sampler-allref,decode-all,seek-hour]

Videos are generated once into bench-data/video/ (H.264, 30 fps, x264 ``veryfast`` at CRF 20: CABAC,
B-frames and the deblocking filter, as a phone or an editor writes them): a textured picture per scene that
pans 2 px a frame, with fresh sensor-like noise on every frame, and a cut every 6 s. Three GOP shapes:

- ``phone``: a keyframe every second and none at the cuts (a phone's fixed GOP);
- ``cuts``: x264's defaults, a keyframe at each cut and at most every 250 frames (edited, re-encoded);
- ``long``: one keyframe every 30 s and none at the cuts (screen recorders, some cameras): the sampler
  must decode every frame there.

Each round runs every (video, method) once, interleaved; the table has the median of the rounds. CPU is the
process's own CPU time (decoders on one thread: the indexer runs one video per worker process), so
"per core" is video seconds or frames per CPU-second. ``decode-all`` is the baseline: every frame
decoded, none converted; ``sampler-allref`` is the sampler without ``skip_nonref``; ``seek-hour`` takes 5
frames a minute by seeking, as a video of an hour or more is read (300 frames, 12 s apart).
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import av

from bench.sysinfo import loadavg, machine, version
from indexer.video import FrameLimits, VideoFrames

FPS = 30
CUT_EVERY_S = 6.0
GOPS = {
    "phone": "keyint=30:min-keyint=30:scenecut=0",
    "cuts": "keyint=250",
    "long": "keyint=900:min-keyint=900:scenecut=0",
}
SIZES = {720: (1280, 720), 1080: (1920, 1080)}


def make_video(path: Path, size: tuple[int, int], gop: str, seconds: float) -> None:
    """A textured scene per cut (coarse blocks plus fine grain, moving with the scene), panning 2 px a
    frame, with fresh sensor-like noise on every frame: a bitrate near a phone's, so decoding costs what
    it costs on real footage."""
    w, h = size
    rng = np.random.default_rng(27)
    per_scene = int(CUT_EVERY_S * FPS)
    pan = 2 * per_scene
    grain = rng.integers(-6, 7, (h + 64, w + 64, 3), dtype=np.int16)  # cropped at a random offset per frame
    tmp = path.with_suffix(".part.mp4")
    out = av.open(str(tmp), "w", format="mp4")
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.codec_context.options = {"preset": "veryfast", "crf": "20", "x264-params": GOPS[gop]}
    scene = np.zeros((1, 1, 3), np.int16)
    for i in range(int(seconds * FPS)):
        if i % per_scene == 0:
            coarse = rng.integers(0, 256, (h // 40 + 2, (w + pan) // 40 + 2, 3), dtype=np.uint8)
            scene = np.kron(coarse, np.ones((40, 40, 1), np.uint8)).astype(np.int16)
            scene += rng.integers(-24, 25, scene.shape, dtype=np.int16)  # texture that moves with the scene
        x = (i % per_scene) * 2
        dy, dx = rng.integers(0, 64, 2)
        picture = scene[:h, x : x + w] + grain[dy : dy + h, dx : dx + w]
        frame = av.VideoFrame.from_ndarray(np.clip(picture, 0, 255).astype(np.uint8), format="rgb24")
        frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    tmp.rename(path)


def run_sampler(path: Path, skip_nonref: bool = True, max_frames: int = 300) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    with VideoFrames(path, FrameLimits(threads=1, skip_nonref=skip_nonref, max_frames=max_frames)) as video:
        kept = sum(1 for _ in video.frames())
        stats = video.stats
        duration = video.info.duration or 0.0
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "kept": kept,
        "decoded": stats.decoded,
        "converted": stats.converted,
        "key_only_gops": stats.key_only_gops,
        "full_gops": stats.full_gops,
        "duration": duration,
    }


def run_decode_all(path: Path) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        decoded = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "kept": 0,
        "decoded": decoded,
        "duration": duration,
    }


METHODS = {
    "sampler": run_sampler,
    "sampler-allref": lambda path: run_sampler(path, skip_nonref=False),
    "decode-all": run_decode_all,
    # 5 frames a minute: the 12 s spacing of an hour-long video's 300, read by seeking as such a video is
    "seek-hour": lambda path: run_sampler(path, max_frames=5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="720,1080")
    ap.add_argument("--gops", default="phone,cuts,long")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"some of {','.join(METHODS)}")
    ap.add_argument("--data", default="bench-data/video")
    ap.add_argument("--out", default="bench-data/video_frames.json")
    args = ap.parse_args()

    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    videos = []
    for p in (int(s) for s in args.sizes.split(",")):
        for gop in args.gops.split(","):
            path = data / f"{p}p-{gop}-{args.seconds:g}s.mp4"
            if not path.exists():
                t = time.perf_counter()
                make_video(path, SIZES[p], gop, args.seconds)
                print(
                    f"made {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.0f} s", flush=True
                )
            videos.append((f"{p}p {gop}", path))

    load_before = loadavg()
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for name, path in videos:
            for method in args.methods.split(","):
                fn = METHODS[method]
                runs.setdefault((name, method), []).append(fn(path))
        print(f"round {r + 1}/{args.rounds} done, load {loadavg()}", flush=True)
    load_after = loadavg()

    rows = []
    print(f"\nPyAV {version('av')}, FFmpeg {av.library_versions['libavcodec']}; load {load_before} -> {load_after}")
    print("| video | method | MB | frames decoded | kept | CPU-s (median) | video s per CPU-s | decoded fps per core |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, method), rs in runs.items():
        cpu = statistics.median(x["cpu_s"] for x in rs)
        r0 = rs[0]
        path = dict(videos)[name]
        row = {
            "video": name,
            "method": method,
            "mb": round(path.stat().st_size / 1e6, 1),
            "decoded": r0["decoded"],
            "kept": r0["kept"],
            "cpu_s_median": round(cpu, 3),
            "cpu_s_runs": [round(x["cpu_s"], 3) for x in rs],
            "wall_s_runs": [round(x["wall_s"], 3) for x in rs],
            "realtime_per_core": round(r0["duration"] / cpu, 1),
            "decoded_fps_per_core": round(r0["decoded"] / cpu, 1),
            **{k: r0[k] for k in ("key_only_gops", "full_gops", "converted") if k in r0},
        }
        rows.append(row)
        print(
            f"| {name} | {method} | {row['mb']} | {row['decoded']} | {row['kept'] or '-'} | {cpu:.2f} "
            f"({', '.join(f'{x:.2f}' for x in row['cpu_s_runs'])}) | {row['realtime_per_core']}× | "
            f"{row['decoded_fps_per_core']} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"machine": machine(), "av": version("av"), "load": [load_before, load_after], "rows": rows}, indent=1
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
