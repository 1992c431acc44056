"""Videos indexed beside images (issue 27): rows, frames, failures, moves, deletes, kills and no-op runs.

Every video is written here with PyAV: scenes of 3 s, each one generated picture (``draw_image``), so
the frame times say which scene a frame shows. The tiny random-weight model embeds them; its vectors
are compared only with themselves (the index finds a frame's own vector), never for meaning.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, draw_image, make_images
from tests.video_support import encode_scenes, write_audio_only

W, H, FPS, SCENE_S = 160, 120, 10, 3.0


def write_video(path: Path, seeds: list[int], seconds: float = SCENE_S) -> Path:
    """One scene of ``seconds`` per seed (a cut between each), H.264 in MP4."""
    return encode_scenes(path, [(np.asarray(draw_image(s, size=(W, H))), seconds) for s in seeds], FPS, (W, H))


def rows(home: Path) -> dict[str, dict]:
    con = sqlite3.connect(home / "glimpse.db")
    con.row_factory = sqlite3.Row
    try:
        return {os.path.basename(r["path"]): dict(r) for r in con.execute("SELECT * FROM images")}
    finally:
        con.close()


def frames_of(home: Path, video_id: int) -> list[tuple[int, float, bytes]]:
    con = sqlite3.connect(home / "glimpse.db")
    try:
        return con.execute(
            "SELECT id, time, vector FROM frames WHERE video_id = ? ORDER BY time", (video_id,)
        ).fetchall()
    finally:
        con.close()


def last_job(home: Path) -> dict:
    con = sqlite3.connect(home / "glimpse.db")
    con.row_factory = sqlite3.Row
    try:
        return dict(con.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT 1").fetchone())
    finally:
        con.close()


def live_index(home: Path):
    from search.vectors.live import IndexDir

    loaded = IndexDir(home / "index").load(use_gpu=False)
    assert loaded is not None
    return loaded


def live_ids(home: Path) -> set[int]:
    import faiss

    index = live_index(home).images
    return {int(i) for i in faiss.vector_to_array(faiss.downcast_index(index).id_map)}


@pytest.fixture
def index(home, tiny_model, tiny_encoder):
    """``index(root)``: one job over ``root`` with the tiny model, decoding in this process."""
    from indexer.pipeline import Options, run_job
    from search.paths import Paths

    def run(root: Path, **kw):
        return run_job(Paths.resolve(home), [str(root)], Options(model=tiny_model, workers=0, **kw), tiny_encoder)[0]

    return run


@pytest.fixture
def reads(monkeypatch):
    """Counts of videos opened for reading and hashed in this process (the real functions run)."""
    import indexer.hashing
    import indexer.video_read

    seen = {"read": [], "hashed": []}
    real_read, real_hash = indexer.video_read.read_video, indexer.hashing.video_hash

    def read_video(path, limits=None):
        seen["read"].append(os.path.basename(path))
        return real_read(path, limits)

    def video_hash(path):
        seen["hashed"].append(os.path.basename(path))
        return real_hash(path)

    monkeypatch.setattr(indexer.video_read, "read_video", read_video)
    monkeypatch.setattr(indexer.video_read, "video_hash", video_hash)
    monkeypatch.setattr(indexer.hashing, "video_hash", video_hash)
    return seen


def test_videos_indexed_beside_images(home, tmp_path, index, reads, monkeypatch):
    monkeypatch.setenv("GLIMPSE_VIDEO_DEDUPE", "1.5")  # keep every chosen frame: the scene times are checked
    root = tmp_path / "photos"
    make_images(root, 3, size=(48, 40))
    write_video(root / "clips" / "walk.mp4", [101, 102, 103])
    write_video(root / "clips" / "sea.mp4", [201, 202, 203])

    counts = index(root)

    assert (counts.new, counts.failed, counts.embedded, counts.videos) == (5, 0, 3, 2)
    got = rows(home)
    walk = got["walk.mp4"]
    assert walk["kind"] == "video" and walk["status"] == "indexed" and walk["error"] is None
    assert (walk["width"], walk["height"], walk["format"], walk["codec"]) == (W, H, "mp4", "h264")
    assert walk["duration"] == pytest.approx(9.0, abs=0.2) and walk["vector"] is None
    assert walk["content_hash"].startswith("v1:") and walk["size"] == (root / "clips" / "walk.mp4").stat().st_size
    frames = frames_of(home, walk["id"])
    times = [t for _, t, _ in frames]
    assert walk["poster"] in times
    # a frame at each cut: one in each scene
    assert {int(t // SCENE_S) for t in times} == {0, 1, 2}
    assert counts.frames == len(frames) + len(frames_of(home, got["sea.mp4"]["id"]))
    job = last_job(home)
    assert (job["outcome"], job["videos"], job["frames"], job["videos_failed"]) == ("ok", 2, counts.frames, 0)
    assert sorted(reads["read"]) == ["sea.mp4", "walk.mp4"]

    # the frames are in the published index, and each finds itself first
    loaded = live_index(home)
    assert loaded.images.ntotal == 3 + counts.frames
    from search.store.schema import unpack_vectors

    for _, _, blob in frames:
        q = unpack_vectors([blob], loaded.dim).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        _, found = loaded.images.search(q, 1)
        assert int(found[0, 0]) in {f[0] for f in frames}

    # stats count videos and frames apart from images
    from search.store.database import Store

    store = Store(home / "glimpse.db")
    try:
        c = store.counts()
    finally:
        store.close()
    assert (c["images_indexed"], c["videos_indexed"], c["video_frames"], c["videos_failed"]) == (3, 2, counts.frames, 0)

    # the no-op run reads and hashes no video: a stat is enough
    reads["read"].clear(), reads["hashed"].clear()
    counts = index(root)
    assert (counts.new, counts.changed, counts.videos, counts.frames, counts.unchanged) == (0, 0, 0, 0, 5)
    assert reads["read"] == [] and reads["hashed"] == []


def test_repeated_frames_dropped(home, tmp_path, index, monkeypatch):
    monkeypatch.setenv("GLIMPSE_VIDEO_FLOOR_S", "2")  # one still picture: a frame every 2 s, all the same
    root = tmp_path / "v"
    write_video(root / "still.mp4", [7], seconds=9.0)
    counts = index(root)
    assert counts.videos == 1 and counts.frames == 1
    monkeypatch.setenv("GLIMPSE_VIDEO_DEDUPE", "1.5")
    (root / "still.mp4").unlink()
    write_video(root / "still2.mp4", [8], seconds=9.0)  # another picture (the same bytes would be a move)
    assert index(root).frames == 5  # one every 2 s over 9 s when nothing is dropped


def test_bad_videos_recorded_and_the_run_completes(home, tmp_path, index, glimpse):
    root = tmp_path / "v"
    write_video(root / "good.mp4", [1, 2])
    cut = write_video(root / "cut.mp4", [3, 4, 5])  # the index (moov) is written last: cut it off
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (root / "text.mkv").write_text("not a video at all\n" * 10)
    write_audio_only(root / "voice.mp4")

    counts = index(root)

    got = rows(home)
    assert got["good.mp4"]["status"] == "indexed"
    assert got["cut.mp4"]["status"] == "failed" and "not a readable video" in got["cut.mp4"]["error"]
    assert got["text.mkv"]["status"] == "failed" and "not a video file" in got["text.mkv"]["error"]
    voice = got["voice.mp4"]
    assert voice["status"] == "skipped" and "no video stream" in voice["error"]
    assert voice["duration"] == pytest.approx(1.0, abs=0.2) and frames_of(home, voice["id"]) == []
    assert (counts.videos, counts.videos_failed, counts.videos_skipped, counts.failed) == (1, 2, 1, 2)
    job = last_job(home)
    assert (job["outcome"], job["videos"], job["videos_failed"], job["videos_skipped"]) == ("ok", 1, 2, 1)

    # failed and skipped rows are not read again until they change
    counts = index(root)
    assert (counts.new, counts.changed, counts.failed, counts.videos_skipped, counts.unchanged) == (0, 0, 0, 0, 4)

    # glimpse stats: videos apart from images, the failed ones listed with the files
    stats = json.loads(glimpse("stats", "--json").stdout)
    counted = {k: stats[k] for k in ("images_indexed", "videos_indexed", "videos_failed", "videos_skipped")}
    assert counted == {"images_indexed": 0, "videos_indexed": 1, "videos_failed": 2, "videos_skipped": 1}
    assert stats["images_in_live_index"] == stats["video_frames"] > 0
    assert {os.path.basename(f["path"]) for f in stats["failed"]} == {"cut.mp4", "text.mkv"}
    assert stats["jobs"][1]["videos_failed"] == 2 and stats["jobs"][1]["videos_skipped"] == 1
    text = glimpse("stats").stdout
    assert "videos:         1 indexed" in text and "2 failed, 1 without a video stream" in text
    assert "the live index is behind" not in text


def test_move_delete_and_change(home, tmp_path, index, reads):
    root = tmp_path / "v"
    write_video(root / "a.mp4", [11, 12])
    write_video(root / "b.mp4", [21, 22])
    index(root)
    before = rows(home)
    a_id, b_id = before["a.mp4"]["id"], before["b.mp4"]["id"]
    a_frames, b_frames = frames_of(home, a_id), frames_of(home, b_id)
    assert {f[0] for f in a_frames} | {f[0] for f in b_frames} <= live_ids(home)

    # a move: the row and its frames follow the file, recognised by its hash (three blocks), not read
    (root / "sub").mkdir()
    shutil.move(root / "a.mp4", root / "sub" / "a.mp4")
    (root / "b.mp4").unlink()
    reads["read"].clear()
    counts = index(root)
    assert (counts.moved, counts.deleted, counts.videos) == (1, 1, 0) and reads["read"] == []
    after = rows(home)
    assert set(after) == {"a.mp4"} and after["a.mp4"]["id"] == a_id
    assert after["a.mp4"]["path"] == str(root / "sub" / "a.mp4")
    assert frames_of(home, a_id) == a_frames and frames_of(home, b_id) == []
    ids = live_ids(home)
    assert {f[0] for f in a_frames} <= ids and not {f[0] for f in b_frames} & ids

    # a changed video (other scenes, other size) is read again; its frames are replaced
    write_video(root / "sub" / "a.mp4", [31, 32, 33])
    counts = index(root)
    assert (counts.changed, counts.videos) == (1, 1) and reads["read"] == ["a.mp4"]
    new_frames = frames_of(home, a_id)
    assert rows(home)["a.mp4"]["duration"] == pytest.approx(9.0, abs=0.2)
    assert [f[2] for f in new_frames] != [f[2] for f in a_frames]
    ids = live_ids(home)
    assert {f[0] for f in new_frames} <= ids and len(ids) == len(new_frames)


def test_a_copied_video_reuses_its_frames(home, tmp_path, index, reads):
    """A copy (same bytes under a new name) is a new row whose frames are the original's, not read again;
    the copy and the original are each found through their own frames, and each outlives the other."""
    root = tmp_path / "v"
    write_video(root / "a.mp4", [41, 42, 43])
    index(root)
    a_id = rows(home)["a.mp4"]["id"]
    a_frames = frames_of(home, a_id)
    (root / "copies").mkdir()
    shutil.copy(root / "a.mp4", root / "copies" / "a copy.mp4")
    reads["read"].clear()
    counts = index(root)
    assert (counts.new, counts.videos) == (1, 0) and reads["read"] == []
    copy = rows(home)["a copy.mp4"]
    original = rows(home)["a.mp4"]
    assert copy["id"] != a_id and copy["kind"] == "video" and copy["status"] == "indexed"
    for col in ("duration", "codec", "poster", "width", "height", "format", "content_hash"):
        assert copy[col] == original[col], col
    copy_frames = frames_of(home, copy["id"])
    assert [(t, v) for _, t, v in copy_frames] == [(t, v) for _, t, v in a_frames]
    assert not {f[0] for f in copy_frames} & {f[0] for f in a_frames}  # fresh ids, in the shared index
    assert {f[0] for f in a_frames + copy_frames} <= live_ids(home)

    (root / "a.mp4").unlink()  # the original goes: the copy keeps its frames
    index(root)
    assert set(rows(home)) == {"a copy.mp4"} and frames_of(home, copy["id"]) == copy_frames
    assert live_ids(home) == {f[0] for f in copy_frames}


def test_video_replaced_by_a_link_leading_outside(home, tmp_path, index):
    root = tmp_path / "v"
    video = write_video(root / "a.mp4", [41, 42])
    index(root)
    row = rows(home)["a.mp4"]
    assert frames_of(home, row["id"])
    outside = write_video(tmp_path / "elsewhere" / "b.mp4", [43])
    video.unlink()
    video.symlink_to(outside)
    counts = index(root)
    assert (counts.changed, counts.failed, counts.videos_failed) == (1, 1, 1)
    failed = rows(home)["a.mp4"]
    assert failed["id"] == row["id"] and failed["kind"] == "video" and failed["status"] == "failed"
    assert "outside the indexed folders" in failed["error"]
    assert frames_of(home, row["id"]) == [] and live_ids(home) == set()


def test_video_hash_reads_three_blocks(tmp_path):
    from indexer.hashing import VIDEO_BLOCK, file_hash, video_hash

    big = tmp_path / "big.mp4"
    data = bytearray(os.urandom(5 * VIDEO_BLOCK))
    big.write_bytes(data)
    h = video_hash(str(big))
    assert h is not None and h.startswith("v1:") and h[3:] != file_hash(str(big))
    data[2 * VIDEO_BLOCK - 10] ^= 1  # a byte outside the three blocks: the same identity
    big.write_bytes(data)
    assert video_hash(str(big)) == h
    data[len(data) // 2] ^= 1  # inside the middle block
    big.write_bytes(data)
    assert video_hash(str(big)) != h


def test_video_off_counts_and_keeps(home, tmp_path, index, reads, monkeypatch):
    root = tmp_path / "v"
    make_images(root, 2, size=(48, 40))
    write_video(root / "a.mp4", [1, 2])
    index(root)
    monkeypatch.setenv("GLIMPSE_VIDEO", "off")
    write_video(root / "b.mp4", [3, 4])
    reads["read"].clear()
    counts = index(root)
    assert (counts.videos_skipped, counts.new, counts.deleted, counts.failed) == (2, 0, 0, 0)
    assert reads["read"] == []
    assert set(rows(home)) >= {"a.mp4"} and "b.mp4" not in rows(home)  # kept, not called deleted
    job = last_job(home)
    assert job["outcome"] == "ok" and "2 videos skipped: video indexing is off" in job["warnings"]


def test_size_cap_and_header_sniff(tmp_path, monkeypatch):
    from indexer.admit import FileRefused, admit_video, looks_like_video

    assert looks_like_video(b"\x00\x00\x00\x20ftypisom")
    assert looks_like_video(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00\x00\x00\x00\x1f")
    assert looks_like_video(b"RIFF\x10\x00\x00\x00AVI ")
    assert not looks_like_video(b"#EXTM3U\n#EXT-X") and not looks_like_video(b"RIFF\x10\x00\x00\x00WAVE")
    path = write_video(tmp_path / "a.mp4", [1])
    assert admit_video(str(path)) == path.stat().st_size
    monkeypatch.setenv("GLIMPSE_MAX_VIDEO_MB", "0.001")
    with pytest.raises(FileRefused, match="GLIMPSE_MAX_VIDEO_MB"):
        admit_video(str(path))


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from indexer.pipeline import Options, run_job
    from search.paths import Paths
    from search.store import writes

    home, root, model = sys.argv[1:4]
    real = writes.IndexerWrites.write_video
    calls = []

    def write_video(s, row_id, values, frames=()):
        calls.append(values["path"])
        if len(calls) == 2:  # the second video's transaction is open, nothing of it committed: kill -9
            os.kill(os.getpid(), signal.SIGKILL)
        return real(s, row_id, values, frames)

    writes.IndexerWrites.write_video = staticmethod(write_video)
    run_job(Paths.resolve(home), [root], Options(model=model, workers=0))
    """
)


def test_killed_mid_video_then_resumed(home, tmp_path, index, tiny_model, reads):
    root = tmp_path / "v"
    for i in range(3):
        write_video(root / f"clip{i}.mp4", [10 * i + 1, 10 * i + 2])
    env = dict(os.environ, GLIMPSE_HOME=str(home), GLIMPSE_PROGRESS_EVERY="0")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(home), str(root), tiny_model],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    got = rows(home)
    assert {p for p, r in got.items() if r["status"] == "indexed"} == {"clip0.mp4"}  # only what was committed
    assert len(frames_of(home, got["clip0.mp4"]["id"])) > 0

    counts = index(root)
    assert sorted(reads["read"]) == ["clip1.mp4", "clip2.mp4"] and counts.videos == 2
    got = rows(home)
    assert len(got) == 3 and all(r["status"] == "indexed" and r["kind"] == "video" for r in got.values())
    con = sqlite3.connect(home / "glimpse.db")
    try:
        per_video = dict(con.execute("SELECT video_id, count(*) FROM frames GROUP BY video_id").fetchall())
        outcomes = [o for (o,) in con.execute("SELECT outcome FROM jobs ORDER BY id")]
    finally:
        con.close()
    assert set(per_video) == {r["id"] for r in got.values()}
    assert outcomes == ["interrupted", "ok"]
    assert set().union(*(set(f[0] for f in frames_of(home, r["id"])) for r in got.values())) == live_ids(home)
