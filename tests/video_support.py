"""Short test videos written with PyAV: still scenes held for a time each, a cut between them."""

from __future__ import annotations

import fractions
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np


def encode_scenes(
    path: Path,
    scenes: Iterable[tuple[np.ndarray, float]],
    fps: int,
    size: tuple[int, int],
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    container_options: dict[str, str] | None = None,
    setup: Callable[[Any], None] | None = None,
) -> Path:
    """``scenes``: (RGB pixels of ``size``, seconds) in order. ``setup``: called with the stream before encoding
    (codec options, display rotation)."""
    import av  # here, so a test module's importorskip("av") still decides

    path.parent.mkdir(parents=True, exist_ok=True)
    out = av.open(str(path), "w", format=fmt, options=container_options or {})
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    if setup is not None:
        setup(stream)
    i = 0
    for pixels, seconds in scenes:
        for _ in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            i += 1
            out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return path


def write_audio_only(path: Path) -> Path:
    """One second of silence in an MP4 with no video stream (a voice memo)."""
    import av

    out = av.open(str(path), "w", format="mp4")
    stream = out.add_stream("aac", rate=8000)
    for i in range(10):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, i * 800
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    out.close()
    return path
