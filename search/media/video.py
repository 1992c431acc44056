"""Open a video file safely and read what the indexer and the server need from it (PyAV).

Shared by the indexer's frame sampler (``indexer/video.py``) and, later, the server's moment
thumbnails (``frame_at``): ``search/`` may not import ``indexer/``, and both must open files the same
way. Three rules hold for every open:

- Only the demuxers of the video formats we index are allowed (``format_whitelist``): a file named
  ``.mp4`` that is really an HLS playlist or an ffconcat list would otherwise make FFmpeg read other
  files (``file:`` URLs) into the frames we show; the mov demuxer's external data references stay off.
- Every FFmpeg failure becomes one :class:`VideoDecodeError` (an ``ImageDecodeError``, so every path
  that turns a bad image into a failed row or a 4xx does the same for a video).
- Frames leave as small upright RGB Pillow images: scaled by swscale in the same pass as the colour
  conversion, then turned by the stream's display matrix (phones record portrait video sideways).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image

from search.errors import GlimpseError
from search.media.decode import ImageDecodeError

try:  # in the product install (requirements.txt); guarded so that its absence is one line, not a traceback
    import av
    import av.error

    AV_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the install
    AV_AVAILABLE = False

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".3gp"})
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".3gp": "video/3gpp",
}
# FFmpeg's demuxer names for those extensions (the mov demuxer's name is "mov,mp4,m4a,3gp,3g2,mj2").
_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"
_OPEN_OPTIONS = {"format_whitelist": _DEMUXERS, "protocol_whitelist": "file,pipe", "enable_drefs": "0"}
INSTALL_HINT = "videos need PyAV: pip install av (it is in requirements.txt)"
# Decoding allocates several full-size frames (references): 8K UHD (33 MP) passes, a 16K x 16K header does not.
MAX_VIDEO_PIXELS = 36_000_000


class VideoSupportMissing(GlimpseError):
    """PyAV is not installed: videos are skipped (one line in the job summary), never a failed run."""


class VideoDecodeError(ImageDecodeError):
    """The file is not a decodable video: corrupt, truncated, not a format we index, or refused."""


class VideoTooLarge(VideoDecodeError):
    """Frames with more pixels than MAX_VIDEO_PIXELS: refused before a frame is decoded."""


class VideoTimeLimit(VideoDecodeError):
    """Reading the video took longer than its per-file time limit."""


def is_video_path(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def content_type(name: str) -> str:
    """The Content-Type a browser needs to play the file (``<video>`` refuses an octet-stream)."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def require_av() -> None:
    """Raise VideoSupportMissing (one line naming the install) when PyAV is absent."""
    if not AV_AVAILABLE:
        raise VideoSupportMissing(INSTALL_HINT)


@dataclass(frozen=True)
class VideoInfo:
    """What a video row stores. ``width``/``height`` are as coded; ``rotation`` is the display
    matrix's counter-clockwise turn (0, 90, 180 or 270), so the upright size is ``display_size``."""

    duration: float | None  # seconds; None when the container does not say
    width: int
    height: int
    codec: str | None
    rotation: int
    has_video: bool
    fps: float | None
    created: str | None  # the container's creation_time tag as written (ISO 8601 in MP4/MOV)

    @property
    def display_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def video_stream(container: InputContainer) -> VideoStream | None:
    """The first real video stream: cover art in an audio file is a one-frame 'video' stream marked
    ``attached_pic``, and is not a video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


@contextlib.contextmanager
def open_video(source: str | os.PathLike | BinaryIO) -> Iterator[InputContainer]:
    """The container, opened under the demuxer whitelist; any FFmpeg error is a VideoDecodeError."""
    require_av()
    try:
        container = av.open(source, mode="r", options=dict(_OPEN_OPTIONS))
    except (av.error.FFmpegError, ValueError, EOFError) as exc:  # FFmpegError is also an OSError
        raise VideoDecodeError(f"not a readable video: {_reason(exc)}") from exc
    try:
        yield container
    finally:
        container.close()


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without the file name it appends (the caller names the file once)."""
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return f"{exc.__class__.__name__}: {exc}"


def decode_error(exc: BaseException, when: str) -> VideoDecodeError:
    """A decode-time failure as the one error type: ``when`` says how far reading got."""
    return VideoDecodeError(f"video unreadable {when}: {_reason(exc)}")


def stream_start(stream: VideoStream) -> float:
    """Seconds of the stream's first timestamp: times we report are from the start of the video."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _duration(container: InputContainer, stream: VideoStream | None) -> float | None:
    if stream is not None and stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def info_of(container: InputContainer, rotation: int = 0) -> VideoInfo:
    """The header's facts; ``rotation`` comes from the first decoded frame (the display matrix is
    frame side data in FFmpeg 7+, and PyAV reads it there)."""
    stream = video_stream(container)
    created = container.metadata.get("creation_time") or container.metadata.get("com.apple.quicktime.creationdate")
    if stream is None:
        return VideoInfo(_duration(container, None), 0, 0, None, 0, False, None, created)
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        duration=_duration(container, stream),
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
        rotation=rotation,
        has_video=True,
        fps=float(rate) if rate else None,
        created=created,
    )


def check_size(stream: VideoStream, max_pixels: int = MAX_VIDEO_PIXELS) -> None:
    w, h = stream.codec_context.width, stream.codec_context.height
    if w * h > max_pixels:
        raise VideoTooLarge(f"video is {w}x{h}, over the {max_pixels:,} pixel limit for decoding; not read")


def upright_rotation(frame: VideoFrame) -> int:
    """The frame's display rotation as 0, 90, 180 or 270 (counter-clockwise); odd angles round."""
    return int(round((frame.rotation or 0) / 90.0)) % 4 * 90


def scaled_size(width: int, height: int, sar: Fraction | None, short_side: int) -> tuple[int, int]:
    """Display size (square pixels, anamorphic ``sar`` applied) scaled so its short side is at most
    ``short_side``; never enlarged (the encoder's own preprocessing does that). Even sizes suit swscale."""
    w = width * float(sar) if sar and sar > 0 else float(width)
    h = float(height)
    scale = min(1.0, short_side / max(1.0, min(w, h)))
    return max(2, round(w * scale)), max(2, round(h * scale))


_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def to_small_rgb(
    frame: VideoFrame, short_side: int, sar: Fraction | None = None, rotation: int | None = None
) -> Image.Image:
    """One decoded frame as a small upright RGB image: scaled (``sar``: the stream's sample aspect
    ratio) and converted in one swscale pass, then turned (Pillow's ROTATE_90 is counter-clockwise,
    as the display matrix is)."""
    w, h = scaled_size(frame.width, frame.height, sar, short_side)
    # threads=1: swscale's default (one slice thread per CPU) leaves worker threads waiting on a condition
    # variable; a process forked later (the indexer's pools) that frees the context then waits for them forever
    img = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA", threads=1).to_image()
    turn = upright_rotation(frame) if rotation is None else rotation
    return img.transpose(_TURNS[turn]) if turn in _TURNS else img


def frame_time(frame: VideoFrame, start: float, time_base: Fraction | None) -> float | None:
    """Seconds from the start of the video, or None when the frame has no timestamp. From the
    stream's time base: frames flushed out of the decoder at the end carry none of their own."""
    ts = frame.pts if frame.pts is not None else frame.dts
    tb = time_base or frame.time_base
    if ts is None or not tb:
        return None
    return max(0.0, float(ts * tb) - start)


def frame_at(
    source: str | os.PathLike | BinaryIO, t: float, short_side: int = 256, max_pixels: int = MAX_VIDEO_PIXELS
) -> Image.Image:
    """The frame shown at ``t`` seconds (the last one at or before it; the first frame for t <= 0),
    for a moment's thumbnail: one seek to the keyframe before ``t``, then decode forward."""
    with open_video(source) as container:
        stream = video_stream(container)
        if stream is None:
            raise VideoDecodeError("the file has no video stream")
        check_size(stream, max_pixels)
        stream.codec_context.thread_count = 1
        start = stream_start(stream)
        best: VideoFrame | None = None
        try:
            if t > 0 and stream.time_base:
                container.seek(int((t + start) / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                ft = frame_time(frame, start, stream.time_base)
                if best is not None and ft is not None and ft > t + 1e-6:
                    break
                best = frame
        except (av.error.FFmpegError, ValueError, EOFError) as exc:
            if best is None:
                raise decode_error(exc, f"at {t:.1f} s") from exc
        if best is None:
            raise VideoDecodeError(f"no frame at {t:.1f} s")
        return to_small_rgb(best, short_side, stream.sample_aspect_ratio)
