"""Choose the frames of a video that the indexer embeds (issue 27), and drop near-repeats after.

The rule: scene changes, with a floor of one frame every ``floor_s`` (10 s), never two kept frames
closer than ``min_gap_s`` (2 s), at most ``max_frames`` (300) a video. Both gaps stretch to
``duration / max_frames`` for a long video, so a 3-hour film is sampled over its whole length
instead of stopping at minute 10 when the cap is reached.

Decoding is the cost, so the reader decodes as little as the rule needs:

- **Keyframes only, where they suffice.** Packets are demuxed a group of pictures (GOP) at a time. A
  GOP whose next keyframe comes within ``key_gap_s`` (4 s) is represented by its keyframe alone, the
  others are never decoded: phones write a keyframe every 1-2 s, and x264-style encoders put one at
  every cut, so keyframes see the scene changes. A longer GOP (screen recordings, some cameras) is
  decoded in full and probed every ``probe_s`` (1 s) inside it.
- **Nothing decoded that cannot be kept.** A keyframe within ``min_gap_s`` of the last kept frame is
  skipped, not decoded.
- **Reference frames only, inside a long GOP.** There the decoder skips the frames no other frame
  refers to (``skip_nonref``, FFmpeg's ``skip_frame=NONREF``): a probe lands a frame or two later.
- **Small at once.** A candidate is scaled to ``short_side`` and converted to RGB in one swscale pass
  (``search.media.video.to_small_rgb``); the scene test compares 16x16 thumbnails of those.
- **Long videos seek.** When the stretched gap is at least the floor (a video of 50 min or more with
  the defaults) scene changes cannot add frames any more, so the reader seeks to ``max_frames``
  evenly spaced times instead of reading the whole file, taking the keyframe when it lies within
  half a step of the time.

A per-file time limit (``time_limit_s``) stops any of them with ``VideoTimeLimit``. The embedding
step (``dedupe_frames``) then drops a kept frame whose vector nearly repeats the previous kept one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from search.media.video import (
    MAX_VIDEO_PIXELS,
    VideoDecodeError,
    VideoInfo,
    VideoTimeLimit,
    check_size,
    decode_error,
    frame_time,
    info_of,
    open_video,
    stream_start,
    to_small_rgb,
    upright_rotation,
    video_stream,
)

if TYPE_CHECKING:
    import os

    from av.container import InputContainer
    from av.packet import Packet
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

# Cosine at or above which a frame's embedding repeats the previous kept one (dedupe_frames): a first
# guess, to be set by the benchmark (a scene's frame must still find its video).
DEDUPE_COSINE = 0.95
_EPS = 1e-3  # seconds: timestamps are rationals, gaps are compared with a little slack


@dataclass(frozen=True)
class FrameLimits:
    """How many frames, how far apart, how small, and how long a file may take."""

    floor_s: float = 10.0  # at least one frame this often
    min_gap_s: float = 2.0  # never two kept frames closer than this
    max_frames: int = 300
    scene_change: float = 0.10  # mean absolute difference of 16x16 RGB thumbnails, 0..1
    key_gap_s: float = 4.0  # GOPs up to this long are seen through their keyframe alone
    probe_s: float = 1.0  # inside a longer GOP, a candidate this often
    short_side: int = 256  # frames leave at most this small on their short side
    time_limit_s: float = 120.0
    max_pixels: int = MAX_VIDEO_PIXELS
    threads: int = 1  # decoder threads: the indexer runs one video per worker process
    # frames no other frame refers to (most B-frames) are not decoded where GOPs are read in full: a probe
    # lands on the next reference frame instead (a frame or two later), for about a third less CPU
    skip_nonref: bool = True

    def gaps(self, duration: float | None) -> tuple[float, float]:
        """(min gap, floor) for a video of ``duration`` seconds: stretched so ``max_frames`` cover it."""
        spread = (duration or 0.0) / max(1, self.max_frames)
        return max(self.min_gap_s, spread), max(self.floor_s, spread)

    def seeks(self, duration: float | None) -> bool:
        """Whether the video is long enough that evenly spaced seeks take the frames."""
        return bool(duration) and self.gaps(duration)[0] >= self.floor_s


@dataclass(frozen=True)
class SampledFrame:
    time: float  # seconds from the start of the video
    image: Image.Image  # small, upright, RGB
    reason: str  # "first", "scene", "floor" or "seek"


@dataclass
class ReadStats:
    """What reading cost: the benchmark's figures, and a line for the job log."""

    packets: int = 0
    decoded: int = 0  # frames out of the decoder
    converted: int = 0  # frames scaled to RGB as candidates
    key_only_gops: int = 0
    full_gops: int = 0
    seconds: float = 0.0


def signature(img: Image.Image) -> np.ndarray:
    """A 16x16 RGB thumbnail as floats in 0..1: enough to see a cut, blind to noise and compression."""
    return np.asarray(img.resize((16, 16), Image.Resampling.BOX), dtype=np.float32) / 255.0


class FramePicker:
    """The frame rule, over candidates in time order; pure, so tests drive it without a video.

    A candidate is compared with the last *kept* frame, not the previous candidate: a cut that falls
    inside the minimum gap is still taken once the gap has passed, and a slow pan is taken once it
    has drifted far enough."""

    def __init__(self, limits: FrameLimits, duration: float | None) -> None:
        self.min_gap, self.floor = limits.gaps(duration)
        self.scene_change = limits.scene_change
        self.max_frames = limits.max_frames
        self.kept = 0
        self.last_time: float | None = None
        self._last_sig: np.ndarray | None = None

    @property
    def full(self) -> bool:
        return self.kept >= self.max_frames

    def wants(self, t: float) -> bool:
        """Whether a candidate at ``t`` could be kept (else it need not be decoded or converted)."""
        return not self.full and (self.last_time is None or t - self.last_time >= self.min_gap - _EPS)

    def offer(self, t: float, sig: np.ndarray) -> str | None:
        """Keep the candidate or not; the reason it is kept, or None."""
        if not self.wants(t):
            return None
        if self.last_time is None or self._last_sig is None:
            reason = "first"
        elif t - self.last_time >= self.floor - _EPS:
            reason = "floor"
        elif float(np.abs(sig - self._last_sig).mean()) >= self.scene_change:
            reason = "scene"
        else:
            return None
        self.kept += 1
        self.last_time, self._last_sig = t, sig
        return reason


def _av_errors() -> tuple[type[BaseException], ...]:
    import av.error

    return (av.error.FFmpegError, ValueError, EOFError)


class VideoFrames:
    """A video opened for sampling: ``info`` (header facts; ``rotation`` once a frame is decoded),
    ``frames()`` (the chosen frames, in time order), ``stats``.

    ``with VideoFrames(path, limits) as video: for f in video.frames(): ...`` Every failure to read is
    a ``VideoDecodeError`` (``VideoTooLarge``, ``VideoTimeLimit``); an audio-only file has
    ``info.has_video`` False and no frames."""

    def __init__(
        self,
        source: str | os.PathLike | BinaryIO,
        limits: FrameLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or FrameLimits()
        self.stats = ReadStats()
        self._source = source
        self._clock = clock
        self._opened = open_video(source)
        self._container: InputContainer | None = None
        self._stream: VideoStream | None = None
        self._deadline = 0.0
        self._start = 0.0
        self._rotation: int | None = None
        self.info = VideoInfo(None, 0, 0, None, 0, False, None, None)

    def __enter__(self) -> VideoFrames:
        self._container = container = self._opened.__enter__()
        try:
            self.info = info_of(container)
            self._stream = video_stream(container)
            if self._stream is not None:
                check_size(self._stream, self.limits.max_pixels)
                ctx = self._stream.codec_context
                ctx.thread_count = self.limits.threads
                self._start = stream_start(self._stream)
        except BaseException:
            self._opened.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._opened.__exit__(kind, exc, tb)

    def frames(self) -> Iterator[SampledFrame]:
        if self._stream is None or self._container is None:
            return
        began = self._clock()
        self._deadline = began + self.limits.time_limit_s
        try:
            if self.limits.seeks(self.info.duration):
                yield from self._by_seeking(self._container, self._stream)
            else:
                yield from self._in_order(self._container, self._stream)
        except VideoDecodeError:
            raise
        except _av_errors() as exc:
            raise decode_error(exc, f"after {self.stats.decoded} frames") from exc
        finally:
            self.stats.seconds += self._clock() - began

    # -- shared steps

    def _check_time(self) -> None:
        if self._clock() > self._deadline:
            raise VideoTimeLimit(
                f"reading the video took over {self.limits.time_limit_s:g} s "
                f"({self.stats.decoded} frames decoded); stopped"
            )

    def _candidate(self, frame: VideoFrame, t: float) -> Image.Image:
        if self._rotation is None:
            self._rotation = upright_rotation(frame)
            self.info = dataclasses.replace(self.info, rotation=self._rotation)
        self.stats.converted += 1
        assert self._stream is not None
        return to_small_rgb(frame, self.limits.short_side, self._stream.sample_aspect_ratio, self._rotation)

    def _decode(self, stream: VideoStream, packet: Packet | None) -> list[VideoFrame]:
        frames = stream.decode(packet)
        self.stats.decoded += len(frames)
        return frames

    # -- videos read in order: keyframes, or whole GOPs probed every probe_s

    def _in_order(self, container: InputContainer, stream: VideoStream) -> Iterator[SampledFrame]:
        limits = self.limits
        picker = FramePicker(limits, self.info.duration)
        if limits.skip_nonref:  # keyframes are reference frames: the keyframe-only GOPs lose nothing
            stream.codec_context.skip_frame = "NONREF"
        tb = stream.time_base
        state = {"next_probe": 0.0, "index": 0}

        def offered(frames: list[VideoFrame]) -> Iterator[SampledFrame]:
            for frame in frames:
                t = frame_time(frame, self._start, stream.time_base)
                if t is None:  # no timestamp (some AVI): count frames at the stream's rate
                    t = state["index"] / (self.info.fps or 25.0)
                state["index"] += 1
                if not (frame.key_frame or t >= state["next_probe"] - _EPS) or not picker.wants(t):
                    continue
                state["next_probe"] = t + limits.probe_s
                img = self._candidate(frame, t)
                reason = picker.offer(t, signature(img))
                if reason:
                    yield SampledFrame(t, img, reason)

        def packet_time(packet: Packet) -> float | None:
            ts = packet.pts if packet.pts is not None else packet.dts
            return None if ts is None or tb is None else float(ts * tb) - self._start

        def close_gop(pending: list[Packet]) -> Iterator[SampledFrame]:
            """A GOP seen through its keyframe alone; skipped when no frame there could be kept."""
            self.stats.key_only_gops += 1
            t = packet_time(pending[0])
            if t is None or picker.wants(t):
                yield from offered(self._decode(stream, pending[0]))

        pending: list[Packet] = []  # the current GOP's packets, not decoded yet
        gop_time: float | None = None
        whole = False  # the current GOP is being decoded in full
        seen_until = 0.0
        for packet in container.demux(stream):
            self._check_time()
            if picker.full:
                break
            if packet.size == 0:  # the demuxer's closing empty packet: we flush below
                continue
            self.stats.packets += 1
            t = packet_time(packet)
            if t is not None and t > seen_until:
                seen_until = t
            if packet.is_keyframe:
                if pending:
                    yield from close_gop(pending)
                pending, gop_time, whole = [packet], t, False
                continue
            if whole or gop_time is None:  # a GOP too long for keyframes alone, or no keyframe yet
                if not whole:
                    whole = True
                    self.stats.full_gops += 1
                yield from offered(self._decode(stream, packet))
                continue
            pending.append(packet)
            if t is not None and t - gop_time > limits.key_gap_s:
                whole = True
                self.stats.full_gops += 1
                for held in pending:
                    yield from offered(self._decode(stream, held))
                pending = []
        if pending and not picker.full:
            yield from close_gop(pending)
        if not picker.full:
            yield from offered(self._decode(stream, None))
            self._check_complete(stream, seen_until)

    def _check_complete(self, stream: VideoStream, seen_until: float) -> None:
        """A file whose data ends well before the length its header promises (a copy still running, a
        cut download) is a failed row, not a video with its end missing: the demuxer just stops there."""
        if not stream.duration or stream.time_base is None:
            return  # only the stream's own duration (exact in MP4/MOV) is trusted for this
        promised = float(stream.duration * stream.time_base)
        if seen_until < promised - max(1.0, 0.01 * promised):
            raise VideoDecodeError(f"video truncated: its data ends at {seen_until:.1f} s of {promised:.1f} s")

    # -- long videos: evenly spaced seeks

    def _by_seeking(self, container: InputContainer, stream: VideoStream) -> Iterator[SampledFrame]:
        duration = self.info.duration or 0.0
        if self.limits.skip_nonref:  # the frames between a keyframe and the target are only passed through
            stream.codec_context.skip_frame = "NONREF"
        # the stretched minimum gap: duration / max_frames for a long video, and never under min_gap_s (a floor
        # set at or under the minimum gap makes any video seek; it must not take frames closer than the gap)
        step = max(self.limits.gaps(duration)[0], 1e-3)
        n = min(self.limits.max_frames, max(1, math.ceil(duration / step - _EPS)))
        tb = stream.time_base
        last: float | None = None
        for i in range(n):
            self._check_time()
            target = i * step
            if tb is not None:
                container.seek(int((target + self._start) / tb), stream=stream, backward=True, any_frame=False)
            chosen: tuple[VideoFrame, float] | None = None
            for frame in container.decode(stream):
                self.stats.decoded += 1
                self._check_time()
                t = frame_time(frame, self._start, stream.time_base)
                if t is None or (last is not None and t < last + max(self.limits.min_gap_s, _EPS) - _EPS):
                    continue  # never two kept frames closer than the minimum gap
                # the keyframe the seek landed on stands for the target when it is within half a step
                if t >= target - step / 2:
                    chosen = (frame, t)
                    break
            if chosen is None:
                continue
            frame, t = chosen
            last = t
            yield SampledFrame(t, self._candidate(frame, t), "seek")


def read_video(
    source: str | os.PathLike | BinaryIO, limits: FrameLimits | None = None
) -> tuple[VideoInfo, list[SampledFrame]]:
    """The whole sample at once (a video's frames are at most ``max_frames`` small images)."""
    with VideoFrames(source, limits) as video:
        frames = list(video.frames())
        return video.info, frames


def dedupe_frames(times: Sequence[float], vectors: np.ndarray, threshold: float = DEDUPE_COSINE) -> list[int]:
    """Indices of the frames to keep: the first, then each whose cosine with the previous *kept*
    frame is below ``threshold`` (a repeat is compared with what stays, so a slow drift is still
    kept once it has drifted far enough). ``times`` must be ascending; vectors need not be normalised."""
    if len(times) != len(vectors):
        raise ValueError(f"{len(times)} times but {len(vectors)} vectors")
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("times must be in ascending order")
    if len(times) == 0:
        return []
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    keep = [0]
    for i in range(1, len(v)):
        if float(v[i] @ v[keep[-1]]) < threshold:
            keep.append(i)
    return keep
