"""Moments inside videos, searched and served (issue 27): a video is one result at its best frame, with the
time inside the right scene; its moments, filters, "more like this" from a moment, the moment's thumbnail
and the file served with Range requests.

The corpus: photos and videos of three scenes each (drawn images, 3 s a scene) in two folders, indexed by the
real CLI with the tiny model. Every sampled frame is kept (GLIMPSE_VIDEO_DEDUPE above 1): the tiny random
model sees two drawings as near-duplicates more often than a real one, and frame deduplication is the
indexer's concern (tests/test_video_index.py), not the search's.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw_image, glimpse_cmd
from video_support import encode_scenes

av = pytest.importorskip("av")

SCENE_S = 3.0
FPS = 10
SIZE = (96, 80)
# video name -> the draw_image seeds of its scenes, in order
VIDEOS = {"trip.mp4": [501, 502, 503], "party.mp4": [601, 602, 603], "walk.mp4": [701, 702, 703]}
N_PHOTOS = 12


def write_scenes(path: Path, seeds: list[int], seconds: float = SCENE_S) -> Path:
    """An H.264 video: each seed's drawing held for ``seconds``, a cut between scenes."""
    return encode_scenes(path, [(np.asarray(draw_image(s, SIZE)), seconds) for s in seeds], FPS, SIZE)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model):
    """(home, photos folder, clips folder, {video name: path}, {video name: id})."""
    base = tmp_path_factory.mktemp("videos")
    media = base / "media"
    root, folder = media / "photos", media / "clips"
    root.mkdir(parents=True)
    folder.mkdir()
    for i in range(N_PHOTOS):
        p = root / f"photo_{i:02d}.png"
        draw_image(300 + i, SIZE).save(p)
        t = dt.datetime(2021, 5, 1 + i, 12).timestamp()
        os.utime(p, (t, t))
    videos = {}
    for n, (name, seeds) in enumerate(VIDEOS.items()):
        videos[name] = write_scenes(folder / name, seeds)
        t = dt.datetime(2024, 3, 1 + n, 12).timestamp()
        os.utime(videos[name], (t, t))
    home = base / "home"
    glimpse_cmd("index", str(media), "--model", tiny_model, "--workers", "0", home=home,
                env={"GLIMPSE_VIDEO_DEDUPE": "1.01"})  # fmt: skip
    from search.paths import Paths
    from search.store.database import Store

    store = Store(Paths.resolve(str(home)).db)
    try:
        ids = {name: store.image_id_for_path(str(path)) for name, path in videos.items()}
    finally:
        store.close()
    assert all(ids.values()), ids
    return home, root, folder, videos, ids


@pytest.fixture(scope="module")
def engine(corpus):
    from search.engine import Engine
    from search.paths import Paths

    eng = Engine(Paths.resolve(str(corpus[0])))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def client(engine):
    from web.app import create_app

    return create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    draw_image(seed, SIZE).save(buf, "PNG")
    return buf.getvalue()


def scene_of(name: str, scene: int) -> tuple[float, float]:
    return scene * SCENE_S, (scene + 1) * SCENE_S


def test_upload_of_a_scene_finds_its_video_at_that_scene(engine, corpus):
    from search.query.kinds import ImageQuery, Paging

    ids = corpus[4]
    for name, seeds in VIDEOS.items():
        for scene, seed in enumerate(seeds):
            page = engine.search(ImageQuery(png(seed)), None, Paging(k=3))
            top = page.results[0]
            assert (top.id, top.kind, top.path) == (ids[name], "video", str(corpus[3][name]))
            lo, hi = scene_of(name, scene)
            assert lo <= top.time < hi, (name, scene, top.time)
            assert top.duration == pytest.approx(3 * SCENE_S, abs=0.2)
            # the other scenes are moments of the same video, best first, at least 2 s from every shown time
            assert 1 <= len(top.moments) <= 5
            scores = [m["score"] for m in top.moments]
            assert scores == sorted(scores, reverse=True) and scores[0] <= top.score + 1e-6
            times = [top.time] + [m["time"] for m in top.moments]
            assert all(abs(a - b) >= 2.0 for i, a in enumerate(times) for b in times[i + 1 :])


def test_each_video_is_one_result(engine, corpus):
    from search.query.kinds import ImageQuery, Paging

    page = engine.search(ImageQuery(png(501)), None, Paging(k=50))
    ids = [r.id for r in page.results]
    assert len(ids) == len(set(ids)) == N_PHOTOS + len(VIDEOS)
    assert sum(r.kind == "video" for r in page.results) == len(VIDEOS)
    assert all(r.time is None and r.moments is None for r in page.results if r.kind == "image")


def test_pages_continue_each_other_over_groups(engine, corpus):
    """Pages of 2 are the whole grouped ranking, computed by brute force from every stored vector."""
    from search.query.kinds import ImageQuery, Paging

    query = ImageQuery(png(602))
    vec = engine.query_vector(query)
    store = engine.store
    photo_ids = [i for i, r in store.result_rows(list(range(1, 1000))).items() if r.status == "indexed"]
    best = {i: float(v @ vec) for i, v in store.vectors_of(photo_ids, len(vec)).items()}
    for video_id, frames in store.video_frames(corpus[4].values(), len(vec)).items():
        best[video_id] = float((frames.vectors @ vec).max())
    expected = [i for i, _ in sorted(best.items(), key=lambda p: (-p[1], p[0]))]
    got, page = [], 0
    while True:
        found = engine.search(query, None, Paging(k=2, page=page))
        got += [r.id for r in found.results]
        if not found.has_more:
            break
        page += 1
    assert got == expected


def test_keywords_hit_on_a_video_shows_its_poster(engine, corpus):
    from search.query.kinds import Paging, TextQuery

    page = engine.search(TextQuery("party", mode="keywords"), None, Paging(k=5))
    assert [r.id for r in page.results] == [corpus[4]["party.mp4"]]
    poster = engine.store.get_image(corpus[4]["party.mp4"]).poster
    assert page.results[0].kind == "video" and page.results[0].time == poster and page.results[0].moments == []
    # auto mode blends the name match with the best frame's cosine: the video once, with its moments
    page = engine.search(TextQuery("party", mode="auto"), None, Paging(k=30))
    videos = [r for r in page.results if r.kind == "video"]
    assert len({r.id for r in page.results}) == len(page.results)
    party = next(r for r in videos if r.id == corpus[4]["party.mp4"])
    assert "keywords" in party.matched and party.moments


def test_filters_apply_to_videos(engine, corpus):
    from search.engine import Filters
    from search.query.kinds import ImageQuery, Paging

    query = ImageQuery(png(701))
    only_clips = engine.search(query, Filters(folder=str(corpus[2])), Paging(k=20))
    assert sorted(r.id for r in only_clips.results) == sorted(corpus[4].values())
    walk = only_clips.results[0]
    assert walk.id == corpus[4]["walk.mp4"] and 0 <= walk.time < SCENE_S
    photos = engine.search(query, Filters(folder=str(corpus[1])), Paging(k=20))
    assert len(photos.results) == N_PHOTOS and all(r.kind == "image" for r in photos.results)
    # dates: the videos' mtimes are in March 2024, each on its own day
    dated = engine.search(query, Filters(date_from="2024-03-02"), Paging(k=20))
    assert sorted(r.id for r in dated.results) == sorted([corpus[4]["party.mp4"], corpus[4]["walk.mp4"]])
    assert engine.store.filtered_ids(None, "2024-03-03", None).size > 1  # the video's frames pass with it
    newest = engine.search(query, Filters(order="date"), Paging(k=3))
    assert [r.id for r in newest.results] == [corpus[4][n] for n in ("walk.mp4", "party.mp4", "trip.mp4")]


def test_similar_from_a_moment(engine, corpus):
    """More like this from a moment: the neighbours of the kept frame nearest ``t``, the video excluded."""
    from search.errors import InvalidValue
    from search.query.kinds import Paging, SimilarQuery, VectorQuery

    trip = corpus[4]["trip.mp4"]
    frames = engine.store.video_frames([trip], engine.encoder.dim)[trip]
    for t in (1.0, 4.0, 7.5):
        page = engine.search(SimilarQuery(trip, t=t), None, Paging(k=20))
        own = frames.vectors[int(np.argmin(np.abs(frames.times - t)))]
        reference = engine.search(VectorQuery(own), None, Paging(k=20))
        assert [r.id for r in page.results] == [r.id for r in reference.results if r.id != trip]
        assert len(page.results) == N_PHOTOS + len(VIDEOS) - 1
    poster = engine.search(SimilarQuery(trip), None, Paging(k=3))
    at_poster = engine.search(SimilarQuery(trip, t=engine.store.get_image(trip).poster), None, Paging(k=3))
    assert [r.id for r in poster.results] == [r.id for r in at_poster.results]
    photo = next(r.id for r in poster.results if r.kind == "image")
    with pytest.raises(InvalidValue):
        engine.search(SimilarQuery(photo, t=1.0), None, Paging(k=3))


def test_api_results_and_clip_retrieval_answer_with_the_video(client, corpus):
    ids = corpus[4]
    res = client.post("/api/search/image", data={"image": (io.BytesIO(png(603)), "q.png"), "k": "3"})
    assert res.status_code == 200
    top = res.get_json()["results"][0]
    assert (top["id"], top["kind"]) == (ids["party.mp4"], "video") and 2 * SCENE_S <= top["time"] < 3 * SCENE_S
    assert f"t={top['time']}" in top["thumb_url"] and f"t={top['time']}" in top["similar_url"]
    body = {"image": base64.b64encode(png(603)).decode(), "num_images": 3}
    knn = client.post("/knn-service", json=body).get_json()
    assert knn[0]["id"] == ids["party.mp4"] and knn[0]["url"].endswith(f"/api/images/{ids['party.mp4']}/file")
    assert 2 * SCENE_S <= knn[0]["time"] < 3 * SCENE_S
    meta = client.post("/metadata", json={"ids": [ids["party.mp4"]]}).get_json()
    # a video's id without a moment: its poster
    assert meta[0]["metadata"]["time"] == client.get(f"/api/images/{ids['party.mp4']}").get_json()["time"]


def test_metadata_of_a_frame_id_is_its_video_at_that_time(client, engine, corpus):
    party = corpus[4]["party.mp4"]
    frames = engine.store.video_frames([party], engine.encoder.dim)[party]
    frame_id, t = int(frames.ids[-1]), float(frames.times[-1])
    meta = client.post("/metadata", json={"ids": [frame_id]}).get_json()
    assert meta[0]["id"] == frame_id
    assert meta[0]["metadata"]["url"].endswith(f"/api/images/{party}/file") and meta[0]["metadata"]["time"] == t


def test_file_streams_with_ranges(client, corpus):
    video_id, path = corpus[4]["trip.mp4"], corpus[3]["trip.mp4"]
    data = path.read_bytes()
    whole = client.get(f"/api/images/{video_id}/file")
    assert whole.status_code == 200 and whole.mimetype == "video/mp4" and whole.data == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = client.get(f"/api/images/{video_id}/file", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert part.mimetype == "video/mp4"
    tail = client.get(f"/api/images/{video_id}/file", headers={"Range": f"bytes={len(data) - 10}-"})
    assert tail.status_code == 206 and tail.data == data[-10:]
    past = client.get(f"/api/images/{video_id}/file", headers={"Range": f"bytes={len(data) + 5}-"})
    assert past.status_code == 416


def test_thumb_of_a_moment(client, corpus):
    video_id = corpus[4]["walk.mp4"]
    seeds = VIDEOS["walk.mp4"]
    shown = {}
    for scene in range(3):
        res = client.get(f"/api/images/{video_id}/thumb?t={scene * SCENE_S + 1.5}&size=160")
        assert res.status_code == 200 and res.mimetype == "image/jpeg"
        shown[scene] = np.asarray(Image.open(io.BytesIO(res.data)).convert("RGB").resize(SIZE), np.float32)
    for scene, seed in enumerate(seeds):  # each moment's thumb is its own scene's drawing, not another's
        drawn = np.asarray(draw_image(seed, SIZE), np.float32)
        errors = {other: float(np.abs(shown[other] - drawn).mean()) for other in shown}
        assert min(errors, key=errors.get) == scene, errors
    poster = client.get(f"/api/images/{video_id}/thumb?size=160")
    at = client.get(f"/api/images/{video_id}").get_json()["time"]
    assert poster.status_code == 200 and poster.data == client.get(f"/api/images/{video_id}/thumb?t={at}&size=160").data
    for bad in ("-1", "nan", "inf", "x", "", "11"):  # duration 9 s: up to 10 s allowed
        assert client.get(f"/api/images/{video_id}/thumb?t={bad}").status_code == 400, bad
    image_id = next(i for i in range(1, 100) if client.get(f"/api/images/{i}").get_json().get("kind") == "image")
    assert client.get(f"/api/images/{image_id}/thumb?t=5").status_code == 200  # ignored on an image


def test_similar_route_with_a_moment(client, corpus, engine):
    trip = corpus[4]["trip.mp4"]
    res = client.get(f"/api/images/{trip}/similar?t=4&k=50")
    assert res.status_code == 200
    body = res.get_json()
    assert body["query"] == {"kind": "similar", "id": trip, "t": 4.0}
    assert trip not in [r["id"] for r in body["results"]]
    assert client.get(f"/api/images/{trip}/similar?t=100").status_code == 400
    image_id = next(r["id"] for r in body["results"] if r["kind"] == "image")
    assert client.get(f"/api/images/{image_id}/similar?t=1").status_code == 400
    detail = client.get(f"/api/images/{trip}").get_json()
    assert detail["kind"] == "video" and detail["duration"] == pytest.approx(9.0, abs=0.2)
    assert detail["time"] == engine.store.get_image(trip).poster is not None  # a video's detail: its poster's time
