"""Two short demo videos (issue 27) made from the demo corpus's own drawings: 10 s at 320x240, one
drawing per 2.5 s scene, H.264 in MP4 (~20-40 KB each). A search for a scene's subject (``cow``,
``tropical fish``, ``watermelon``) finds its video at that moment.

Each scene drifts a little (the drawing slides a few pixels a frame), so a scene is a moving picture,
not one still frame repeated; the output is the same bytes each run (fixed drawings, fixed encoder).

    python demo/video_clips.py [demo/corpus/videos]
"""

from __future__ import annotations

import fractions
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

CORPUS = Path(__file__).parent / "corpus" / "images"
W, H, FPS, SCENE_S = 320, 240, 10, 2.5
# (drawing, background): each scene on its own backdrop, as a cut in a real video changes the whole picture
CLIPS = {
    "farm_and_sea.mp4": [("cow.png", (170, 215, 120)), ("tropical-fish.png", (90, 160, 220)),
                         ("passenger-ship.png", (200, 225, 245)), ("dog.png", (235, 205, 160))],
    "picnic.mp4": [("watermelon.png", (250, 240, 200)), ("baguette-bread.png", (190, 140, 100)),
                   ("hot-pepper.png", (120, 120, 130)), ("eggplant.png", (210, 240, 210))],
}  # fmt: skip


def _frame(drawing: Image.Image, background: tuple[int, int, int], shift: int) -> np.ndarray:
    canvas = Image.new("RGB", (W, H), background)
    canvas.paste(drawing, ((W - drawing.width) // 2 + shift - 10, (H - drawing.height) // 2), drawing)
    return np.asarray(canvas)


def write_clip(path: Path, scenes: list[tuple[str, tuple[int, int, int]]]) -> Path:
    out = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    # a keyframe at each cut (x264's scene detection) and no threads: the same bytes on every machine
    stream.codec_context.options = {"crf": "30", "preset": "medium", "threads": "1", "x264-params": "keyint=50"}
    i = 0
    for name, background in scenes:
        with Image.open(CORPUS / "fluent-flat" / name) as im:
            im = im.convert("RGBA")
            scale = 180 / max(im.size)
            drawing = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        n = round(SCENE_S * FPS)
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(_frame(drawing, background, round(20 * k / n)), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, FPS)
            i += 1
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return path


def make(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [write_clip(out / name, scenes) for name, scenes in CLIPS.items()]


if __name__ == "__main__":
    for p in make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus" / "videos"):
        print(p, p.stat().st_size, "bytes")
