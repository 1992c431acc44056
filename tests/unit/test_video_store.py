"""A video's row and frames in the store: one id space with images, one vector_seq counter, the publish
source reading images and frames together, frames following their video's delete and a model switch."""

from __future__ import annotations

import numpy as np

from search.store.database import Store
from search.store.schema import FrameRow, ImageRow


def _vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _image(path: str, seed: int) -> dict:
    return {
        "path": path,
        "size": 1,
        "mtime": 1.0,
        "status": "indexed",
        "vector": _vec(seed).astype(np.float16).tobytes(),
    }


def _video(path: str) -> dict:
    return {"path": path, "size": 9, "mtime": 2.0, "status": "indexed", "duration": 30.0, "format": "mp4"}


def test_images_videos_and_frames_share_one_id_space_and_one_index_source(tmp_path):
    store = Store(tmp_path / "g.db")
    with store.transaction() as s:
        store.write_images(s, [_image("/a.jpg", 1)])
    with store.transaction() as s:
        vid = store.write_video(s, None, _video("/v.mp4"), [(12.0, _vec(3)), (0.0, _vec(2))])
    with store.transaction() as s:
        store.write_images(s, [_image("/b.jpg", 4)])
    with store.session() as s:
        images = {r.path: r.id for r in s.query(ImageRow)}
        frames = [(f.id, f.video_id, f.time) for f in s.query(FrameRow).order_by(FrameRow.time)]
    frame_ids = [f[0] for f in frames]
    assert [f[1:] for f in frames] == [(vid, 0.0), (vid, 12.0)]
    every = [*images.values(), *frame_ids]
    assert len(set(every)) == len(every), "an image took a frame's id"
    assert images["/b.jpg"] > max(frame_ids)

    ids, mark = store.vector_ids("images")
    assert ids.tolist() == sorted([images["/a.jpg"], images["/b.jpg"], *frame_ids])  # the video row has no vector
    assert store.vector_ids_since("images", mark).size == 0
    seqs_before = mark
    got, got_ids = store.image_vectors(8)
    assert got_ids.tolist() == ids.tolist()
    for chunk in (1, 2, 3):  # chunked reads merge both tables in id order, none lost or repeated
        parts = list(store.iter_vectors("images", 8, chunk=chunk))
        assert np.concatenate([p[0] for p in parts]).tolist() == ids.tolist()
        parts = list(store.iter_vectors("images", 8, ids=ids[1:], chunk=chunk))
        assert np.concatenate([p[0] for p in parts]).tolist() == ids[1:].tolist()
    np.testing.assert_allclose(got[ids.tolist().index(frame_ids[1])], _vec(3), atol=2e-3)

    with store.transaction() as s:  # the video re-read: its frames replaced, newer than any publish mark
        store.write_video(s, vid, _video("/v.mp4"), [(5.0, _vec(5))])
    since = store.vector_ids_since("images", seqs_before).tolist()
    with store.session() as s:
        (new_frame,) = s.query(FrameRow).all()
    assert since == [new_frame.id] and new_frame.time == 5.0

    with store.transaction() as s:
        store.delete_images(s, [vid])
    with store.session() as s:
        assert s.query(FrameRow).count() == 0


def test_a_model_switch_drops_frames_and_reads_videos_again(tmp_path):
    store = Store(tmp_path / "g.db")
    store.set_model("m", None, "f1", 8)
    with store.transaction() as s:
        vid = store.write_video(s, None, _video("/v.mp4"), [(0.0, _vec(1))])
    store.switch_model("m2", None, "f2", 8)
    with store.session() as s:
        assert s.query(FrameRow).count() == 0
        assert s.get_one(ImageRow, vid).status == "pending"
    states = store.file_states()
    assert states["/v.mp4"][4] == 0  # not done: the plan embeds it again
