"""In headless Chromium: the "weaker matches" divider at the relevance floor, "no good matches" when nothing
is above it, and the Duplicates page (linked from the nav) showing a planted copy's group."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_pages import browser, card_ids, page, shot  # noqa: F401 - browser, page: fixtures
from web_support import LiveServer, corpus, engine, server  # noqa: F401 - shared module-scoped fixtures


@pytest.fixture
def floored_server(corpus, engine, tmp_path):
    """A server over a copy of the corpus whose live version says ``floor`` (set by the test)."""
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    home = tmp_path / "home"
    shutil.copytree(corpus.home, home)
    index = home / "index"
    manifest = index / (index / "current").read_text().strip() / "manifest.json"
    started: list = []

    def start(floor: float) -> LiveServer:
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "floor": floor}))
        eng = Engine(Paths.resolve(home))
        live = LiveServer(create_app(eng, config={"GLIMPSE_ALLOWED_HOSTS": ["127.0.0.1"]}))
        started.append((live, eng))
        return live

    yield start
    for live, eng in started:
        live.close()
        eng.close()


def test_divider_at_the_floor_and_no_good_matches(page, engine, floored_server, output_dir: Path):
    from search.query.kinds import Paging, TextQuery

    scores = [r.score for r in engine.search(TextQuery("a sunny beach"), page=Paging(k=24)).results]
    live = floored_server((scores[4] + scores[5]) / 2)
    page.goto(live.url + "/?q=a+sunny+beach&mode=images")
    items = page.eval_on_selector_all("#results > li", "els => els.map(e => e.className)")
    assert items[:5] == ["card"] * 5 and items[5] == "divider" and items.count("divider") == 1
    assert page.locator("#results .divider").inner_text().strip().lower() == "weaker matches"
    assert page.locator("#status").inner_text().startswith("22 results for “a sunny beach”")
    shot(page, output_dir, "floor-divider")
    # nothing above the floor: say so instead of "24+ results"; the closest are still shown
    live = floored_server(0.9999)
    page.goto(live.url + "/?q=a+sunny+beach&mode=images")
    assert page.locator("#status").inner_text().startswith("No good matches")
    assert "showing the closest" in page.locator("#status").inner_text()
    assert page.eval_on_selector_all("#results > li", "els => els[0].className") == "divider"
    assert len(card_ids(page)) == 22  # every indexed image, none hidden
    assert not page.problems


def test_duplicates_page_shows_the_groups(page, server, corpus, output_dir: Path):
    page.goto(server.url + "/")
    page.click("nav >> text=Duplicates")
    page.wait_for_url("**/duplicates")
    page.fill("input[name=threshold]", "0.997")
    page.click("text=Find near-duplicates")
    page.wait_for_url("**/duplicates?threshold=0.997")
    # a pass slower than the page's wait (a loaded machine) shows its progress first and the page asks again
    page.wait_for_selector("#groups .group")
    assert page.locator("#progress").count() == 0
    groups = page.locator("#groups .group")
    assert groups.count() == 1
    paths = groups.first.locator(".path").all_inner_texts()
    assert sorted(Path(p).name for p in paths) == ["beach_05.png", "beach_05_copy.jpg"]
    facts = groups.first.locator(".facts").first.inner_text()
    assert "120×90" in facts and "2020-06-06" in facts  # dimensions and date of the original (kept first)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#groups img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, output_dir, "duplicates")
    assert not page.problems
    page.goto(server.url + "/duplicates?threshold=2")  # a 400 page, with the message
    assert "threshold must be a number in (0, 1]" in page.locator("#error").inner_text()
