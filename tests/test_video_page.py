"""Issue 27: a video's card and its playback from the moment, in a real headless Chromium over the real server.

A 3-scene WebM (VP8, which every Chromium build plays) and a few photos are indexed by the real CLI with the
tiny model; searching by one scene's picture shows the video's card with the moment's time badge, its page
plays from that moment (``currentTime`` once the metadata is in), and a click on another moment seeks there.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import draw_image, glimpse_cmd
from test_pages import browser, page, shot  # noqa: F401 - browser, page: fixtures
from video_support import encode_scenes
from web_support import LiveServer

av = pytest.importorskip("av")

SCENES = [811, 812, 813]  # draw_image seeds, one per scene
SCENE_S, FPS, SIZE = 3.0, 10, (160, 120)


def write_webm(path, seeds) -> None:
    scenes = [(np.asarray(draw_image(s, SIZE)), SCENE_S) for s in seeds]
    encode_scenes(path, scenes, FPS, SIZE, fmt="webm", codec="libvpx")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("video-page")
    root, home = base / "media", base / "home"
    root.mkdir()
    write_webm(root / "scenes.webm", SCENES)
    for i in range(4):
        draw_image(900 + i, SIZE).save(root / f"photo_{i}.png")
    query = base / "scene2.png"
    draw_image(SCENES[1], SIZE).save(query)
    # every sampled frame kept: the tiny random model sees two drawings as near-duplicates more often than a real one
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home,
                env={"GLIMPSE_VIDEO_DEDUPE": "1.01"})  # fmt: skip
    return home, query


@pytest.fixture(scope="module")
def server(indexed):
    from search.paths import Paths
    from web.app import create_app

    live = LiveServer(create_app(Paths.resolve(indexed[0]), config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"]}))
    yield live
    live.close()


def current_time(pg) -> float:
    return float(pg.evaluate("() => document.getElementById('player').currentTime"))


def test_video_card_plays_from_its_moment(page, server, indexed, output_dir):
    pg = page
    pg.goto(server.url + "/")
    pg.set_input_files("#file", str(indexed[1]))
    card = pg.locator("#results .card.video").first
    card.wait_for()
    assert pg.locator("#results .card").first.get_attribute("class") == "card video"  # the scene's video first
    badge = card.locator(".time-badge").inner_text()
    assert badge in ("0:03", "0:04", "0:05"), badge  # the second scene: 3 s to 6 s
    assert card.locator(".play").count() == 1
    assert "t=" in card.locator("img").get_attribute("src")
    pg.wait_for_function("() => (i => i.complete && i.naturalWidth > 0)(document.querySelector('.card.video img'))")
    shot(pg, output_dir, "video-card")

    card.locator("a.thumb").click()
    pg.wait_for_selector("#player")
    start = float(pg.get_attribute("#player", "data-time"))
    assert SCENE_S <= start < 2 * SCENE_S
    pg.wait_for_function("() => document.getElementById('player').readyState >= 1")  # loadedmetadata fired
    pg.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {start}) < 0.5")
    assert abs(current_time(pg) - start) < 0.5
    marks = pg.locator(".timeline .moment:not(.best)")
    assert marks.count() >= 1
    other = float(marks.first.get_attribute("data-time"))
    assert abs(other - start) >= 2.0
    marks.first.click()
    pg.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {other}) < 0.5")
    assert abs(current_time(pg) - other) < 0.5
    shot(pg, output_dir, "video-player")
    # "more like this" from the moment on screen: the similar search of the video at that time
    pg.evaluate("() => document.getElementById('player').pause()")
    with pg.expect_navigation():
        pg.click("a.like-moment")
    assert "like=" in pg.url and "t=" in pg.url
    pg.locator("#results .card").first.wait_for()
    assert "t=" in pg.get_attribute("#query-image", "src")  # the query panel shows the moment searched from
    assert not pg.problems, pg.problems


def test_a_video_page_opened_directly_shows_its_scenes(page, server, indexed, output_dir):
    """No search led here (a bookmark, a link): the page still shows what is in the video, the frames its
    index kept, each a thumbnail that plays from its time; the API lists the same times."""
    import sqlite3

    con = sqlite3.connect(indexed[0] / "glimpse.db")
    (video_id,) = con.execute("SELECT id FROM images WHERE kind = 'video'").fetchone()
    kept = [t for (t,) in con.execute("SELECT time FROM frames WHERE video_id = ? ORDER BY time", (video_id,))]
    con.close()
    assert len(kept) >= len(SCENES)  # a frame per scene at least

    pg = page
    pg.goto(f"{server.url}/image/{video_id}")
    pg.wait_for_selector("#player")
    scenes = pg.locator(".scenes .scene")
    assert [float(scenes.nth(i).get_attribute("data-time")) for i in range(scenes.count())] == pytest.approx(
        kept, abs=1e-3
    )
    pg.wait_for_function(
        "() => [...document.querySelectorAll('.scenes img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    pg.wait_for_function("() => document.getElementById('player').readyState >= 1")
    last = kept[-1]
    scenes.last.click()
    pg.wait_for_function(f"() => Math.abs(document.getElementById('player').currentTime - {last}) < 0.5")
    shot(pg, output_dir, "video-scenes")
    assert not pg.problems, pg.problems
    assert pg.request.get(f"{server.url}/api/images/{video_id}").json()["scenes"] == pytest.approx(kept, abs=1e-6)
    found = pg.request.get(f"{server.url}/api/search?q=photo&mode=images&k=10").json()["results"]
    photos = [r["id"] for r in found if r["kind"] == "image"]
    assert photos and all("scenes" not in pg.request.get(f"{server.url}/api/images/{i}").json() for i in photos)
