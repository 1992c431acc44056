"""Near-duplicate candidates come from images alone: video frames share the images' index (issue 27), and
an image among many near frames must still find its real copy among its nearest neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.publish import StoreSource
from search.store.database import Store
from search.store.schema import pack_vector
from search.vectors.duplicates import NEIGHBOURS, similar_pairs
from search.vectors.live import IndexDir

DIM = 32


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("frames", [0, NEIGHBOURS + 4])
def test_an_image_among_near_frames_still_finds_its_copy(tmp_path, frames):
    rng = np.random.default_rng(7)
    photo = unit(rng.standard_normal(DIM))
    copy = unit(photo + 0.12 * unit(rng.standard_normal(DIM)))  # a copy: cosine ~0.99
    others = unit(rng.standard_normal((50, DIM)))  # unrelated images
    # the video's frames lie between the two: nearer each of them than they are to each other
    mid = unit(photo + copy)
    near = unit(mid + 0.02 * unit(rng.standard_normal((frames, DIM)))) if frames else np.zeros((0, DIM))
    store = Store(tmp_path / "g.db")
    rows = [
        dict(path=f"/p/{i}.jpg", size=1, mtime=0.0, status="indexed", vector=pack_vector(v))
        for i, v in enumerate([photo, copy, *others])
    ]
    with store.transaction() as s:
        store.write_images(s, rows)
        if frames:
            video = dict(path="/v.mp4", size=9, mtime=2.0, status="indexed", duration=60.0, format="mp4")
            store.write_video(s, None, video, [(float(t), v) for t, v in enumerate(near)])
    assert len(store.frame_ids()) == frames
    root = tmp_path / "index"
    d = IndexDir(root)
    d.publish_sources(StoreSource(store, "images", DIM, 1000), StoreSource(store, "captions", DIM, 1000),
                      {"dim": DIM, "fingerprint": "m1"})  # fmt: skip
    live = d.load(use_gpu=False)
    assert live is not None and live.images.ntotal == 52 + frames
    with store.session() as s:
        photo_id, copy_id = (i for (i,) in s.execute(store_ids_sql()))
    a, b, _ = similar_pairs(live, store.iter_image_vectors(DIM), 0.85, skip=store.frame_ids())
    assert (photo_id, copy_id) in set(zip(a.tolist(), b.tolist()))
    assert not set(store.frame_ids().tolist()) & (set(a.tolist()) | set(b.tolist()))
    if frames:  # without leaving the frames out, they take every neighbour slot and the copy is lost
        a, b, _ = similar_pairs(live, store.iter_image_vectors(DIM), 0.85)
        assert (photo_id, copy_id) not in set(zip(a.tolist(), b.tolist()))
    store.close()


def store_ids_sql():
    from sqlalchemy import text

    return text("SELECT id FROM images WHERE path IN ('/p/0.jpg', '/p/1.jpg') ORDER BY path")
