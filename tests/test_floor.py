"""The relevance floor: estimated and stored at publish, returned by every search answer, cut at by
``min_score=auto`` (API and CLI); an index published before floors answers null and auto cuts nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import glimpse_cmd
from web_support import corpus, engine  # noqa: F401 - shared module-scoped fixtures


def live_manifest(home: Path) -> tuple[Path, dict]:
    index = home / "index"
    path = index / (index / "current").read_text().strip() / "manifest.json"
    return path, json.loads(path.read_text())


@pytest.fixture(scope="module")
def client(engine):
    from web.app import create_app

    return create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()


def test_publish_stores_a_floor_and_the_api_returns_it(corpus, client):
    _, manifest = live_manifest(corpus.home)
    floor = manifest["floor"]
    assert isinstance(floor, float) and -1 < floor < 1
    assert client.get("/api/search?q=beach&k=3").get_json()["floor"] == floor
    # other query kinds have no floor estimated for them: the field is there, null
    assert client.get("/api/search?q=beach&mode=captions").get_json()["floor"] is None
    first = client.get("/api/search?q=beach&k=1").get_json()["results"][0]["id"]
    assert client.get(f"/api/images/{first}/similar").get_json()["floor"] is None


def home_with_floor(corpus, tmp_path: Path, floor: float | None) -> Path:
    """A copy of the corpus's home whose live version says ``floor`` (None: no floor, as before floors)."""
    home = tmp_path / "home-copy"
    shutil.copytree(corpus.home, home)
    path, manifest = live_manifest(home)
    manifest.pop("floor")
    if floor is not None:
        manifest["floor"] = floor
    path.write_text(json.dumps(manifest))
    return home


def test_min_score_auto_cuts_at_the_floor(corpus, client, tmp_path):
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    # The tiny random model puts every real query under its own floor; a floor set between the
    # scores of one query's results makes the cut visible.
    whole = client.get("/api/search?q=tall+buildings&k=200").get_json()["results"]
    floor = (whole[2]["score"] + whole[3]["score"]) / 2
    home = home_with_floor(corpus, tmp_path, floor)
    eng = Engine(Paths.resolve(home))
    try:
        c = create_app(eng, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()
        cut = c.get("/api/search?q=tall+buildings&k=200&min_score=auto").get_json()
        assert [r["id"] for r in cut["results"]] == [r["id"] for r in whole[:3]] and cut["floor"] == floor
    finally:
        eng.close()
    out = glimpse_cmd("search", "tall buildings", "-k", "200", "--min-score", "auto", "--json", home=home).stdout
    assert [r["id"] for r in json.loads(out)] == [r["id"] for r in whole[:3]]
    bad = glimpse_cmd("search", "x", "--min-score", "lots", home=home, check=False)
    assert bad.returncode == 2 and "--min-score must be a number or auto" in bad.stderr


def test_an_index_without_floor_answers_null_and_auto_cuts_nothing(corpus, tmp_path):
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    home = home_with_floor(corpus, tmp_path, None)
    old = Engine(Paths.resolve(home))
    try:
        c = create_app(old, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()
        plain = c.get("/api/search?q=beach&k=50").get_json()
        auto = c.get("/api/search?q=beach&k=50&min_score=auto").get_json()
        assert plain["floor"] is None and auto["floor"] is None
        assert [r["id"] for r in auto["results"]] == [r["id"] for r in plain["results"]] and plain["results"]
    finally:
        old.close()
