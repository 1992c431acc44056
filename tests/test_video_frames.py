"""Frames chosen from a video (indexer/video.py) and the shared opening rules (search/media/video.py).

Every video is written here with PyAV itself: 64x48 scenes of one flat colour each, with a marker
block at the top left so that rotation shows, cut at known times. Nothing is read from the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.video import FrameLimits, FramePicker, VideoFrames, dedupe_frames, read_video, signature
from search.errors import GlimpseError
from search.media.decode import ImageDecodeError
from search.media.video import VideoDecodeError, VideoTimeLimit, VideoTooLarge, content_type, frame_at, is_video_path
from video_support import encode_scenes, write_audio_only

W, H, FPS = 64, 48, 10
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def scene_pixels(colour: tuple[int, int, int], w: int = W, h: int = H) -> np.ndarray:
    a = np.empty((h, w, 3), np.uint8)
    a[:] = colour
    a[: h // 2, : w // 3] = 255 - np.array(colour, np.uint8)  # the marker: top left, as stored
    return a


def write_video(
    path: Path,
    scenes: list[tuple[tuple[int, int, int], float]],
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    size: tuple[int, int] = (W, H),
    rotation: int | None = None,
    x264: str | None = None,
    faststart: bool = False,
) -> Path:
    """``scenes``: (colour, seconds) in order; a cut between each. ``x264``: x264-params (keyint...)."""

    def setup(stream) -> None:
        if x264:
            stream.codec_context.options = {"x264-params": x264}
        if rotation is not None:
            stream.set_display_rotation(rotation)

    return encode_scenes(
        path,
        [(scene_pixels(colour, *size), seconds) for colour, seconds in scenes],
        FPS,
        size,
        fmt=fmt,
        codec=codec,
        container_options={"movflags": "faststart"} if faststart else None,
        setup=setup,
    )


def cuts(n: int, seconds: float) -> list[tuple[tuple[int, int, int], float]]:
    return [(COLOURS[i % len(COLOURS)], seconds) for i in range(n)]


def colour_of(img) -> tuple[int, int, int]:
    """The scene colour: a pixel away from the marker (bottom right, whatever the rotation)."""
    r, g, b = img.getpixel((img.width - 2, img.height - 2))
    return r, g, b


def near(a: tuple[int, int, int], b: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# -- the frame rule on real videos


def test_scene_cuts_found_at_their_times(tmp_path):
    path = write_video(tmp_path / "cuts.mp4", cuts(6, 3.0))
    info, frames = read_video(path)
    assert info.has_video and info.codec == "h264" and (info.width, info.height) == (W, H)
    assert info.duration == pytest.approx(18.0, abs=0.2)
    assert [round(f.time, 1) for f in frames] == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0]
    assert [f.reason for f in frames] == ["first"] + ["scene"] * 5
    for i, f in enumerate(frames):
        assert f.image.mode == "RGB" and f.image.size == (W, H)
        assert near(colour_of(f.image), COLOURS[i])


def test_keyframes_alone_where_they_suffice(tmp_path):
    # a keyframe every second (as phones write): the others are never decoded
    path = write_video(tmp_path / "k1.mp4", cuts(4, 3.0), x264="keyint=10:min-keyint=10")
    with VideoFrames(path) as video:
        frames = list(video.frames())
        stats = video.stats
    assert [round(f.time, 1) for f in frames] == [0.0, 3.0, 6.0, 9.0]
    assert stats.full_gops == 0 and stats.key_only_gops == 12
    assert stats.decoded < stats.packets / 5


def test_long_gop_decoded_and_probed(tmp_path):
    # one keyframe for the whole video and no keyframe at the cuts: probed every second inside
    path = write_video(tmp_path / "gop.mp4", cuts(4, 3.5), x264="keyint=300:scenecut=0")
    with VideoFrames(path) as video:
        frames = list(video.frames())
        stats = video.stats
    assert stats.full_gops == 1 and stats.key_only_gops == 0
    assert [f.reason for f in frames] == ["first", "scene", "scene", "scene"]
    for i, f in enumerate(frames):  # each scene's frame lies inside that scene, within a probe of its cut
        assert 3.5 * i <= f.time <= 3.5 * i + 1.0 + 1e-6
        assert near(colour_of(f.image), COLOURS[i])


def test_floor_on_a_still_scene(tmp_path):
    path = write_video(tmp_path / "still.mp4", [(COLOURS[0], 25.0)])
    _, frames = read_video(path)
    assert [(round(f.time), f.reason) for f in frames] == [(0, "first"), (10, "floor"), (20, "floor")]


def test_cuts_closer_than_the_minimum_gap(tmp_path):
    path = write_video(tmp_path / "fast.mp4", cuts(12, 0.5))
    _, frames = read_video(path)
    times = [f.time for f in frames]
    assert len(times) >= 3
    assert all(b - a >= 2.0 - 1e-3 for a, b in zip(times, times[1:]))


def test_frame_cap_stretches_the_gaps(tmp_path):
    path = write_video(tmp_path / "many.mp4", cuts(10, 3.0))  # 30 s, a cut every 3 s
    _, frames = read_video(path, FrameLimits(max_frames=5))  # gaps stretch to 6 s
    times = [f.time for f in frames]
    assert 3 <= len(times) <= 5 and times[-1] >= 18.0  # spread over the video, not the first 5 cuts
    assert all(b - a >= 6.0 - 1e-3 for a, b in zip(times, times[1:]))


def test_long_video_sampled_by_seeking(tmp_path):
    path = write_video(tmp_path / "long.mp4", cuts(10, 3.0), x264="keyint=10")
    with VideoFrames(path, FrameLimits(max_frames=3)) as video:  # 30 s / 3 = the 10 s floor: seeks
        frames = list(video.frames())
        decoded = video.stats.decoded
    assert [(round(f.time), f.reason) for f in frames] == [(0, "seek"), (10, "seek"), (20, "seek")]
    assert [colour_of(f.image) for f in frames][1] == pytest.approx(COLOURS[3], abs=12)
    assert decoded <= 6  # keyframes near the targets, not the file


@pytest.mark.parametrize(
    "fmt,codec,name", [("matroska", "libx264", "a.mkv"), ("webm", "libvpx-vp9", "a.webm"), ("avi", "mpeg4", "a.avi")]
)
def test_other_containers(tmp_path, fmt, codec, name):
    path = write_video(tmp_path / name, cuts(3, 3.0), fmt=fmt, codec=codec)
    info, frames = read_video(path)
    assert info.has_video and info.duration == pytest.approx(9.0, abs=0.5)
    assert len(frames) == 3 and [round(f.time) for f in frames] == [0, 3, 6]
    assert all(near(colour_of(f.image), COLOURS[i], 20) for i, f in enumerate(frames))


# -- odd and hostile files


def test_rotation_metadata_applied(tmp_path):
    path = write_video(tmp_path / "portrait.mp4", cuts(2, 2.0), rotation=90)
    info, frames = read_video(path)
    assert info.rotation == 90 and info.display_size == (H, W)
    img = frames[0].image
    assert img.size == (H, W)
    # turned counter-clockwise, as FFmpeg's display matrix says: the top-left marker is now bottom left
    assert near(img.getpixel((1, img.height - 2)), tuple(255 - c for c in COLOURS[0]))
    assert near(img.getpixel((1, 1)), COLOURS[0])


def test_large_frames_decoded_small(tmp_path):
    path = write_video(tmp_path / "big.mp4", cuts(2, 2.0), size=(640, 480))
    _, frames = read_video(path, FrameLimits(short_side=96))
    assert [f.image.size for f in frames] == [(128, 96), (128, 96)]


def test_too_many_pixels_refused_before_decoding(tmp_path):
    path = write_video(tmp_path / "huge.mp4", cuts(1, 1.0))
    with pytest.raises(VideoTooLarge, match="64x48"):
        read_video(path, FrameLimits(max_pixels=W * H - 1))


def test_time_limit(tmp_path):
    path = write_video(tmp_path / "slow.mp4", cuts(3, 3.0))
    ticks = iter(range(10_000))  # a clock that advances a second every time it is read

    with pytest.raises(VideoTimeLimit, match="over 5 s"):
        with VideoFrames(path, FrameLimits(time_limit_s=5), clock=lambda: float(next(ticks))) as video:
            list(video.frames())


def test_truncated_file_without_its_index(tmp_path):
    path = write_video(tmp_path / "cut.mp4", cuts(4, 3.0))  # the index (moov) is written last
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match="not a readable video"):
        read_video(path)


@pytest.mark.parametrize("keep", [0.5, 0.75, 0.9])
def test_truncated_file_with_its_index_first(tmp_path, keep):
    # the header promises 30 s; the data stops early, either inside a packet (FFmpeg's error) or
    # cleanly between packets (the demuxer just ends: our check against the promised length)
    path = write_video(tmp_path / "cut.mp4", cuts(10, 3.0), faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VideoDecodeError, match="truncated|unreadable"):
        read_video(path)


def test_garbage_and_disguised_playlists_refused(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "hls.mp4").write_text("#EXTM3U\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    (tmp_path / "list.mkv").write_text(f"ffconcat version 1.0\nfile {write_video(tmp_path / 'x.mp4', cuts(1, 1))}\n")
    for name in ("noise.mp4", "hls.mp4", "list.mkv"):
        with pytest.raises(VideoDecodeError):
            read_video(tmp_path / name)
    # one error family: the indexer turns it into a failed row like a bad image
    assert issubclass(VideoDecodeError, ImageDecodeError) and issubclass(VideoDecodeError, GlimpseError)


def test_audio_only_file(tmp_path):
    path = write_audio_only(tmp_path / "voice.m4a")
    info, frames = read_video(path)
    assert not info.has_video and frames == [] and info.duration == pytest.approx(1.0, abs=0.2)


# -- a moment's frame (thumbnails), names


def test_frame_at_a_time(tmp_path):
    path = write_video(tmp_path / "cuts.mp4", cuts(4, 3.0))
    assert near(colour_of(frame_at(path, 7.5)), COLOURS[2])
    assert near(colour_of(frame_at(path, 0)), COLOURS[0])
    with open(path, "rb") as f:  # the server hands over the file it opened and verified
        assert near(colour_of(frame_at(f, 11.9)), COLOURS[3])
    assert near(colour_of(frame_at(path, 99.0)), COLOURS[3])  # past the end: the last frame


def test_names():
    assert is_video_path("a/B.MOV") and is_video_path("x.webm") and not is_video_path("x.jpg")
    assert content_type("clip.mp4") == "video/mp4" and content_type("c.webm") == "video/webm"


# -- the rule and the embedding step, without a video


def test_picker_rule():
    still = np.zeros((16, 16, 3), np.float32)
    other = np.ones((16, 16, 3), np.float32)
    picker = FramePicker(FrameLimits(), duration=60.0)
    assert picker.offer(0.0, still) == "first"
    assert not picker.wants(1.0) and picker.offer(1.0, other) is None  # a cut inside the gap waits
    assert picker.offer(2.0, other) == "scene"  # and is taken once the gap has passed
    assert picker.offer(5.0, other) is None
    assert picker.offer(12.0, other) == "floor"
    assert picker.kept == 3


def test_signature_sees_a_cut_not_noise():
    from PIL import Image

    rng = np.random.default_rng(0)
    base = scene_pixels(COLOURS[0]).astype(np.int16)
    noisy = np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
    a, b = signature(Image.fromarray(base.astype(np.uint8))), signature(Image.fromarray(noisy))
    c = signature(Image.fromarray(scene_pixels(COLOURS[1])))
    limit = FrameLimits().scene_change
    assert float(np.abs(a - b).mean()) < limit < float(np.abs(a - c).mean())


def test_dedupe_frames():
    e = np.eye(4, dtype=np.float32)
    vectors = np.stack([e[0], e[0] * 3, e[0] + 0.1 * e[1], e[1], e[1] + 0.2 * e[2], e[2], e[0]])
    times = [0, 2, 4, 6, 8, 10, 12]
    # 1: the same direction; 2: cos 0.995 to the kept 0; 4: cos 0.98 to the kept 3; 6 returns to 0 but
    # is compared with the previous kept frame (5), so it stays
    assert dedupe_frames(times, vectors, 0.95) == [0, 3, 5, 6]
    assert dedupe_frames(times, vectors, 0.999) == [0, 2, 3, 4, 5, 6]
    assert dedupe_frames([], np.zeros((0, 4)), 0.95) == []
    with pytest.raises(ValueError):
        dedupe_frames([0, 1], vectors, 0.95)
    with pytest.raises(ValueError):
        dedupe_frames([1, 0], vectors[:2], 0.95)


def test_floor_at_the_minimum_gap_keeps_the_gap(tmp_path):
    # floor_s <= min_gap_s makes any video "long" (sampled by seeking): the seeks keep min_gap_s apart
    # instead of taking max_frames targets over a few seconds
    path = write_video(tmp_path / "still.mp4", cuts(1, 9.0))
    _, frames = read_video(path, FrameLimits(floor_s=2, min_gap_s=2))
    times = [f.time for f in frames]
    assert len(times) == 5 and all(b - a >= 2 - 1e-3 for a, b in zip(times, times[1:]))
