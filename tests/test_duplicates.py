"""Near-duplicates: planted copies (resized, recompressed, cropped) are grouped, different images are not,
through the real CLI and the JSON API; bad thresholds and pages are refused.

The tiny random-weight model scores every pair of these drawings high (unrelated ones up to ~0.992,
the copies >= 0.999), so the tests pass a threshold between the two; the default is measured for a
trained model (README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import draw_image, glimpse_cmd

THRESHOLD = "0.996"
KEYS = {"id", "path", "size", "width", "height", "date"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("dupes")
    root, home = base / "photos", base / "home"
    root.mkdir()
    for i in range(12):
        draw_image(i, (240, 180)).save(root / f"orig_{i:02d}.png")
    original = draw_image(3, (240, 180))
    original.resize((120, 90)).save(root / "copy_resized.png")
    original.save(root / "copy_q40.jpg", quality=40)
    original.crop((12, 9, 228, 171)).save(root / "copy_cropped.png")  # 5% off each side
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    return root, home


def names(group: dict) -> list[str]:
    return [Path(image["path"]).name for image in group["images"]]


def test_cli_groups_the_planted_copies_and_nothing_else(planted):
    root, home = planted
    out = json.loads(glimpse_cmd("duplicates", "--threshold", THRESHOLD, "--json", home=home).stdout)
    assert set(out) == {"threshold", "groups"} and out["threshold"] == float(THRESHOLD)
    assert len(out["groups"]) == 1, out
    group = out["groups"][0]
    assert set(group) == {"images", "min_score"} and group["min_score"] >= float(THRESHOLD)
    assert all(set(image) == KEYS for image in group["images"])
    # largest pixel count first: the original (240x180) and its recompressed copy, then the crop, then the small one
    assert names(group) == ["orig_03.png", "copy_q40.jpg", "copy_cropped.png", "copy_resized.png"]
    assert [(i["width"], i["height"]) for i in group["images"]] == [(240, 180), (240, 180), (216, 162), (120, 90)]
    text = glimpse_cmd("duplicates", "--threshold", THRESHOLD, home=home).stdout
    assert "group 1: 4 images" in text and "orig_03.png" in text
    assert all(p.exists() for p in root.iterdir())  # read-only: nothing deleted


@pytest.mark.parametrize("bad", ["0", "nan"])
def test_cli_refuses_a_threshold_outside_0_1(planted, bad):
    proc = glimpse_cmd("duplicates", "--threshold", bad, home=planted[1], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: threshold must be a number in (0, 1]"


@pytest.fixture(scope="module")
def client(planted):
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    engine = Engine(Paths.resolve(planted[1]))
    yield create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()
    engine.close()


def test_api_pages_the_same_groups(client):
    body = client.get(f"/api/duplicates?threshold={THRESHOLD}").get_json()
    assert body["threshold"] == float(THRESHOLD) and body["page"] == 0 and body["has_more"] is False
    assert [names(g) for g in body["groups"]] == [
        ["orig_03.png", "copy_q40.jpg", "copy_cropped.png", "copy_resized.png"]
    ]
    image = body["groups"][0]["images"][0]
    assert KEYS <= set(image) and image["thumb_url"] == f"/api/images/{image['id']}/thumb"
    assert client.get(f"/api/duplicates?threshold={THRESHOLD}&page=1").get_json()["groups"] == []
    # at a threshold every drawing passes, everything is one group
    assert len(client.get("/api/duplicates?threshold=0.5").get_json()["groups"][0]["images"]) == 15


@pytest.mark.parametrize(
    "query", ["threshold=0", "threshold=-1", "threshold=1.01", "threshold=nan", "threshold=abc", "page=-1", "page=x"]
)
def test_api_refuses_bad_threshold_and_page(client, query):
    resp = client.get(f"/api/duplicates?{query}")
    assert resp.status_code == 400 and set(resp.get_json()) == {"error"}
