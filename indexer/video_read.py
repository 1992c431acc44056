"""Read one video for the index (the video stage's worker side): check it, hash it, sample its frames
small and preprocess them with the encoder's transform. No encoder here: this runs in worker processes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from indexer.admit import admit_video
from indexer.hashing import video_hash
from indexer.video import FrameLimits, read_video
from search.media.decode import ImageDecodeError, to_uint8_array
from search.media.video import VideoInfo
from search.settings import settings


def frame_limits(short_side: int) -> FrameLimits:
    """The video settings (GLIMPSE_VIDEO_FLOOR_S and the others) as the frame sampler's limits; frames
    leave at ``short_side`` (the model's input size), one decoder thread (one video per worker process)."""
    s = settings()
    return FrameLimits(
        floor_s=s["GLIMPSE_VIDEO_FLOOR_S"],
        min_gap_s=s["GLIMPSE_VIDEO_MIN_GAP_S"],
        max_frames=s["GLIMPSE_VIDEO_MAX_FRAMES"],
        time_limit_s=s["GLIMPSE_VIDEO_TIME_LIMIT_S"],
        max_pixels=s["GLIMPSE_VIDEO_MAX_PIXELS"],
        short_side=short_side,
        threads=1,
    )


@dataclass
class VideoRead:
    """What a worker sends back for one video: ``pixels[i]`` (uint8 HWC, preprocessed) is the frame at
    ``times[i]``; ``error``: why it could not be read (then no frames)."""

    index: int  # position in the stage's list
    error: str | None = None
    content_hash: str | None = None
    info: VideoInfo | None = None
    format: str | None = None
    times: list[float] = field(default_factory=list)
    pixels: np.ndarray | None = None
    seconds: float = 0.0  # reading and preprocessing, in the worker


def read_one(index: int, path: str, name: str, want_hash: bool, pil_transform: Callable, short_side: int) -> VideoRead:
    """Check, hash (when asked), sample and preprocess one video; errors are returned, not raised.
    ``path`` is read (the canonical file), ``name`` (the walked path) gives its format."""
    t0 = time.perf_counter()
    out = VideoRead(index, format=os.path.splitext(name)[1][1:].lower() or None)
    try:
        admit_video(path)
        if want_hash:  # before reading, so a failed row still knows its bytes (a fixed copy is then new)
            out.content_hash = video_hash(path)
        out.info, frames = read_video(path, frame_limits(short_side))
        out.times = [f.time for f in frames]
        if frames:
            out.pixels = np.stack([to_uint8_array(pil_transform(f.image)) for f in frames])
    except ImageDecodeError as exc:  # VideoDecodeError, FileRefused
        out.error = str(exc)
    except FileNotFoundError:
        out.error = "file vanished during indexing"
    except Exception as exc:  # noqa: BLE001 - any bad file must not stop the run
        out.error = f"cannot read video: {exc.__class__.__name__}: {exc}"
    out.seconds = time.perf_counter() - t0
    if out.error:
        out.times, out.pixels = [], None
    return out


def exif_time(created: str | None) -> str | None:
    """A container's creation time (ISO 8601, UTC in MP4/MOV) as the ``YYYY:MM:DD HH:MM:SS`` that
    ``images.taken_at`` holds for photos; None when absent or a zero date (1904/1970: never set)."""
    if not created:
        return None
    try:
        when = dt.datetime.fromisoformat(created.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.year <= 1970:
        return None
    return when.strftime("%Y:%m:%d %H:%M:%S")
