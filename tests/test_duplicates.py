"""Near-duplicates: every kind of planted copy is grouped with its original, verified by pixels; different
images are not, even where the model calls everything similar; a chain of near images is not one group;
the JSON says how each group was verified and what to keep; homes from before pixel prints get them on
the next reindex. Through the real CLI and the JSON API; bad thresholds and pages are refused.

The tiny random-weight model scores every pair of these drawings high (unrelated ones up to ~0.992), so
the candidate threshold passed here (0.5) lets every pair through: the pixel check alone decides.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import draw_image, glimpse_cmd

THRESHOLD = "0.5"
KEYS = {"id", "path", "size", "width", "height", "date", "distance"}
GROUP_KEYS = {"keep", "representative", "verified_by", "min_score", "images"}


def drawing(seed: int, size=(240, 180)) -> Image.Image:
    """A clip-art-like drawing: flat shapes on a transparent background."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        x1, y1 = x0 + int(rng.integers(w // 6, w // 2)), y0 + int(rng.integers(h // 6, h // 2))
        fill = (*(int(c) for c in rng.integers(0, 256, 3)), 255)
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=fill)
    return img


def flat(img: Image.Image, background) -> Image.Image:
    out = Image.new("RGB", img.size, background)
    out.paste(img, mask=img.getchannel("A"))
    return out


def crop(img: Image.Image, share: float) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * share), round(h * share)
    return img.crop((dx, dy, w - dx, h - dy))


# Each kind of copy the finder must survive, made from a photo-like original (o) or a drawing with
# transparency (t).
COPIES = {
    "o_resized.png": lambda o, t: o.resize((120, 90), Image.LANCZOS),
    "o_q40.jpg": lambda o, t: o,  # saved as JPEG quality 40 below: recompression and a format change
    "o_crop5.png": lambda o, t: crop(o, 0.05),
    "o_crop10.png": lambda o, t: crop(o, 0.10),
    "o_rotated.png": lambda o, t: o.rotate(2, resample=Image.BICUBIC, fillcolor=(255, 255, 255)),
    "t_on_white.jpg": lambda o, t: flat(t, (255, 255, 255)),
    "t_on_black.png": lambda o, t: flat(t, (0, 0, 0)),
    "t_crop8_small.png": lambda o, t: crop(t, 0.08).resize((150, 113), Image.LANCZOS),
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("dupes")
    root, home = base / "photos", base / "home"
    root.mkdir()
    for i in range(10):
        draw_image(i, (240, 180)).save(root / f"orig_{i:02d}.png")
        drawing(100 + i).save(root / f"drawing_{i:02d}.png")
    o, t = draw_image(3, (240, 180)), drawing(103)
    for name, make in COPIES.items():
        copy = make(o, t)
        copy.convert("RGB").save(root / name, quality=40) if name.endswith(".jpg") else copy.save(root / name)
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    return root, home


def names(group: dict) -> list[str]:
    return [Path(image["path"]).name for image in group["images"]]


def test_every_kind_of_copy_is_grouped_with_its_original_and_nothing_else(planted):
    root, home = planted
    out = json.loads(glimpse_cmd("duplicates", "--threshold", THRESHOLD, "--json", home=home).stdout)
    assert out["threshold"] == float(THRESHOLD) and out["without_print"] == 0
    # at this candidate threshold the old finder made one group of every image; the pixels keep only copies
    assert sorted(sorted(names(g)) for g in out["groups"]) == [
        sorted(["drawing_03.png", *(n for n in COPIES if n.startswith("t_"))]),
        sorted(["orig_03.png", *(n for n in COPIES if n.startswith("o_"))]),
    ], out
    for g in out["groups"]:
        assert g["verified_by"] == "aligned-thumbnail-v4" and g["keep"] == g["images"][0]["id"]
        assert all(set(image) == KEYS for image in g["images"])
        by_id = {image["id"]: image for image in g["images"]}
        assert by_id[g["representative"]]["distance"] == 0.0
        assert all(0.0 <= image["distance"] <= 0.2 for image in g["images"])
        # keep order: most pixels, then the largest file
        files = [root / name for name in names(g)]
        order = [(-Image.open(f).width * Image.open(f).height, -f.stat().st_size) for f in files]
        assert order == sorted(order)
    # the copies flattened on white and on black were each checked against a transparent image of the group
    art = next(g for g in out["groups"] if "drawing_03.png" in names(g))
    rep = names(art)[[i["id"] for i in art["images"]].index(art["representative"])]
    assert rep in {"drawing_03.png", "t_crop8_small.png"}
    text = glimpse_cmd("duplicates", "--threshold", THRESHOLD, home=home).stdout
    assert "group 1: 6 images" in text and "keep  " in text
    assert all(p.exists() for p in root.iterdir())  # read-only: nothing deleted


def test_a_chain_of_near_images_is_not_one_group(tmp_path, tiny_model):
    """Five images in a line, each within the pixel limit of its neighbours and over it two steps away, and a
    re-upload of the middle one: the old finder's connected components made them one group through the
    chain. Now the loose links of a chain are ambiguous (each middle image matches two that do not match
    each other, like a series of look-alike drawings) and refused; the re-upload still groups with its twin,
    and nothing joins it through the chain."""
    from search.media import pixel_print

    root, home = tmp_path / "chain", tmp_path / "home"
    root.mkdir()
    base = np.array(draw_image(7, (240, 180)), np.float32)
    names_ = [f"{c}.png" for c in "abcde"]
    prints = []
    for name, share in zip(names_, (0.0, 0.25, 0.5, 0.75, 1.0)):
        arr = base.copy()
        band = int(240 * share)
        arr[:, :band] = 255 - arr[:, :band]  # invert a growing band
        img = Image.fromarray(arr.astype(np.uint8))
        img.save(root / name)
        prints.append(pixel_print.pixel_print(img))
    (root / "c_again.png").write_bytes((root / "c.png").read_bytes())
    decoded = pixel_print.decode(prints)

    def dist(i: int, j: int) -> float:
        return float(pixel_print.distances(pixel_print.take(decoded, [i]), pixel_print.take(decoded, [j]))[0])

    near = max(dist(i, i + 1) for i in range(4))
    far = min(dist(i, j) for i in range(5) for j in range(i + 2, 5))
    assert far > near, (near, far)
    limit = (near + far) / 2  # neighbours verify, images two steps apart do not
    assert min(dist(i, i + 1) for i in range(4)) > 0.4 * limit  # loose links (duplicates.SURE)
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    env = {"GLIMPSE_DUPLICATES_MAX_DISTANCE": str(limit)}
    out = json.loads(glimpse_cmd("duplicates", "--threshold", "0.1", "--json", home=home, env=env).stdout)
    assert [sorted(names(g)) for g in out["groups"]] == [["c.png", "c_again.png"]], out
    assert all(image["distance"] == 0.0 for image in out["groups"][0]["images"])


def shape(points: list[tuple[float, float]] | None, size: int = 256) -> Image.Image:
    """A simple drawing: one dark filled shape on a transparent square, a disc where ``points`` is None."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if points is None:
        d.ellipse([38, 38, 218, 218], fill=(20, 20, 20, 255))
    else:
        d.polygon(points, fill=(20, 20, 20, 255))
    return img


def spade() -> Image.Image:
    img = shape([(128, 28), (30, 150), (226, 150)])
    d = ImageDraw.Draw(img)
    for cx in (78, 178):
        d.ellipse([cx - 52, 98, cx + 52, 202], fill=(20, 20, 20, 255))
    d.polygon([(128, 120), (96, 236), (160, 236)], fill=(20, 20, 20, 255))
    return img


def test_a_look_alike_simple_drawing_is_refused_and_a_loose_copy_of_one_kept(tmp_path, tiny_model):
    """A disc and a hexagon of the same area: simple drawings within the pixel limit of each other, loosely (as
    close as a crop of a detailed picture), and alone (no other look-alike makes the match ambiguous). They
    differ over areas (the hexagon's corners, the disc's arcs between them) that no small move of their few
    edges explains: refused. A spade turned 3 degrees and cropped 6%, as loose, differs only along its edges:
    grouped."""
    from search.media import pixel_print
    from search.vectors.duplicates import SURE

    root, home = tmp_path / "shapes", tmp_path / "home"
    root.mkdir()
    radius = 90 * math.sqrt(math.pi / (3 * math.sin(math.pi / 3)))  # the hexagon with the disc's area
    hexagon = [(128 + radius * math.cos(k * math.pi / 3), 128 + radius * math.sin(k * math.pi / 3)) for k in range(6)]
    pictures = {
        "disc.png": shape(None),
        "hexagon.png": shape(hexagon),
        "spade.png": spade(),
        "spade_copy.png": crop(flat(spade(), (255, 255, 255)).rotate(3, Image.BICUBIC, fillcolor="white"), 0.06),
    }
    for name, img in pictures.items():
        img.save(root / name)
    decoded = pixel_print.decode([pixel_print.pixel_print(img) for img in pictures.values()])
    dist, shift = pixel_print.compare(pixel_print.take(decoded, [0, 2]), pixel_print.take(decoded, [1, 3]))
    limit = 0.2
    assert SURE * limit < dist[0] <= limit and shift[0] > pixel_print.SHIFT_MAX, (dist, shift)  # disc, hexagon
    assert SURE * limit < dist[1] <= limit and shift[1] <= pixel_print.SHIFT_MAX, (dist, shift)  # spade, its copy
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    out = json.loads(glimpse_cmd("duplicates", "--threshold", "0.1", "--json", home=home).stdout)
    assert [sorted(names(g)) for g in out["groups"]] == [["spade.png", "spade_copy.png"]], out


def test_a_small_copy_is_not_the_representative_its_original_is(tmp_path, tiny_model):
    """A 64-pixel copy of a drawing holds no detail (no fine check), so it sits within the limit of its original
    and of a look-alike that only the fine grid tells apart (a grey panel where the original has stripes). The
    copy matches both, more than either matches anything, and was the group's representative: the look-alike
    joined through it. The members are now verified against its original instead."""
    from search.media import pixel_print

    root, home = tmp_path / "small", tmp_path / "home"
    root.mkdir()
    arr = np.array(flat(drawing(300, (256, 256)), (255, 255, 255)))
    arr[96:160, 96:224] = 128
    original = Image.fromarray(arr)
    stripes = (np.arange(96, 224) // 8) % 2 == 1
    arr[96:160, 96:224] = np.where(stripes[None, :, None], 232, 0)
    pictures = {"original.png": original, "small_copy.png": original.resize((64, 64), Image.LANCZOS)}
    pictures["look_alike.png"] = Image.fromarray(arr)
    for name, img in pictures.items():
        img.save(root / name)
    decoded = pixel_print.decode([pixel_print.pixel_print(img) for img in pictures.values()])
    dist = pixel_print.distances(pixel_print.take(decoded, [1, 1, 0]), pixel_print.take(decoded, [0, 2, 2]))
    assert dist[0] < dist[1] <= 0.4 * 0.2 < 0.2 < dist[2], dist  # copy~original, copy~look-alike: sure; not the two
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    out = json.loads(glimpse_cmd("duplicates", "--threshold", "0.1", "--json", home=home).stdout)
    assert [sorted(names(g)) for g in out["groups"]] == [["original.png", "small_copy.png"]], out
    (group,) = out["groups"]
    assert names(group)[[i["id"] for i in group["images"]].index(group["representative"])] == "original.png"


def test_keep_is_the_oldest_of_equal_copies(tmp_path, tiny_model):
    root, home = tmp_path / "same", tmp_path / "home"
    root.mkdir()
    for name, mtime in (("new.png", 2_000_000_000), ("old.png", 1_000_000_000), ("mid.png", 1_500_000_000)):
        draw_image(5, (200, 150)).save(root / name)
        os.utime(root / name, (mtime, mtime))
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    (group,) = json.loads(glimpse_cmd("duplicates", "--json", home=home).stdout)["groups"]
    assert names(group) == ["old.png", "mid.png", "new.png"] and group["keep"] == group["images"][0]["id"]
    assert set(group) == GROUP_KEYS
    assert [image["distance"] for image in group["images"]] == [0.0, 0.0, 0.0]


def test_a_home_from_before_pixel_prints_gets_them_on_reindex(planted, tmp_path, tiny_model):
    import shutil

    home = tmp_path / "old-home"
    shutil.copytree(planted[1], home)
    con = sqlite3.connect(home / "glimpse.db")
    con.execute("UPDATE images SET pixel_print = NULL WHERE id % 2 = 0")  # as migration 0008 leaves a home
    con.execute("UPDATE images SET pixel_print = x'0100ff00' WHERE id % 2 = 1")  # a print of an older version
    con.commit()
    con.close()
    out = json.loads(glimpse_cmd("duplicates", "--threshold", THRESHOLD, "--json", home=home).stdout)
    assert out["groups"] == [] and out["without_print"] == 10 + 10 + len(COPIES)  # none checked, none a 500
    assert "no pixel print yet" in glimpse_cmd("duplicates", home=home).stderr
    con = sqlite3.connect(home / "glimpse.db")
    con.execute("UPDATE images SET pixel_print = NULL WHERE id % 2 = 1")  # what a print version's migration does
    con.commit()
    con.close()
    glimpse_cmd("reindex", home=home)
    again = json.loads(glimpse_cmd("duplicates", "--threshold", THRESHOLD, "--json", home=home).stdout)
    before = json.loads(glimpse_cmd("duplicates", "--threshold", THRESHOLD, "--json", home=planted[1]).stdout)
    # the same groups (a JPEG's print may differ in the last digits: the backfill decodes it at its own draft size)
    assert again["without_print"] == 0 and [names(g) for g in again["groups"]] == [names(g) for g in before["groups"]]


def test_rows_without_a_print_are_found_through_the_partial_index(planted):
    """A no-op reindex asks which rows still need a print: through ix_images_no_print (empty once filled),
    never by reading every indexed row, whose pages hold the vectors."""
    from search.store.database import Store

    con = sqlite3.connect(planted[1] / "glimpse.db")
    try:
        for sql in (
            f"SELECT count(*) {Store._NO_PRINT}",
            f"SELECT id {Store._NO_PRINT} AND id > 0 ORDER BY id LIMIT 5",
        ):
            plan = " ".join(str(row[-1]) for row in con.execute(f"EXPLAIN QUERY PLAN {sql}"))
            assert "ix_images_no_print" in plan, plan
    finally:
        con.close()


@pytest.mark.parametrize("bad", ["0", "nan", "7", "-0.5"])
def test_cli_refuses_a_threshold_outside_0_1_as_a_usage_error(tmp_path, bad):
    """A wrong option is exit 2 (usage), like every other option; checked before any home is opened."""
    proc = glimpse_cmd("duplicates", "--threshold", bad, home=tmp_path / "none", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value for '--threshold': threshold must be a number in (0, 1]" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def client(planted):
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    engine = Engine(Paths.resolve(planted[1]))
    yield create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()
    engine.close()


def test_api_pages_the_same_groups(client, planted):
    body = client.get(f"/api/duplicates?threshold={THRESHOLD}").get_json()
    assert body["threshold"] == float(THRESHOLD) and body["page"] == 0 and body["has_more"] is False
    assert body["max_distance"] == 0.2 and body["without_print"] == 0
    cli = json.loads(glimpse_cmd("duplicates", "--threshold", THRESHOLD, "--json", home=planted[1]).stdout)
    assert [names(g) for g in body["groups"]] == [names(g) for g in cli["groups"]]
    group = body["groups"][0]
    assert set(group) == GROUP_KEYS
    image = group["images"][0]
    assert KEYS <= set(image) and image["thumb_url"] == f"/api/images/{image['id']}/thumb"
    assert client.get(f"/api/duplicates?threshold={THRESHOLD}&page=1").get_json()["groups"] == []


@pytest.mark.parametrize(
    "query", ["threshold=0", "threshold=-1", "threshold=1.01", "threshold=nan", "threshold=abc", "page=-1", "page=x"]
)
def test_api_refuses_bad_threshold_and_page(client, query):
    resp = client.get(f"/api/duplicates?{query}")
    assert resp.status_code == 400 and set(resp.get_json()) == {"error"}


def test_the_pass_reports_its_progress_and_the_page_shows_it(planted, monkeypatch):
    """The real pass says what it is doing, stage by stage, every image counted; while a pass runs the page
    says how far it has got and asks again (a meta refresh), then shows the groups."""
    import threading

    import search.vectors.duplicate_groups as service
    from search.engine import Engine
    from search.paths import Paths
    from search.vectors.duplicates import STAGES, find_duplicates
    from web.app import create_app

    engine = Engine(Paths.resolve(planted[1]))
    seen: list[tuple[str, int, int]] = []
    found = find_duplicates(engine.store, engine.live(), float(THRESHOLD), progress=lambda *p: seen.append(p))
    images = engine.store.counts()["images_indexed"]
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert stages == list(STAGES)
    for stage in STAGES[:3]:  # every image read in each pass over the collection
        assert (stage, images, images) in seen
    assert all(0 <= done <= total for _, done, total in seen)

    # a pass held at its first stage, as a large collection's would be
    held, release = threading.Event(), threading.Event()

    def slow(store, live, threshold, progress):
        progress(STAGES[0], 5, images)
        held.set()
        release.wait(30)
        return found

    monkeypatch.setattr(service, "find_duplicates", slow)
    client = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": None}).test_client()
    try:
        monkeypatch.setattr("web.duplicates.PAGE_WAIT_S", 0.2)
        page = client.get(f"/duplicates?threshold={THRESHOLD}").get_data(as_text=True)
        assert held.is_set()
        assert 'http-equiv="refresh"' in page and "Finding near-duplicates" in page
        assert f"Comparing pictures:\n    5 of {images}" in page and 'class="group"' not in page
        release.set()
        page = client.get(f"/duplicates?threshold={THRESHOLD}").get_data(as_text=True)
        assert 'http-equiv="refresh"' not in page and page.count('class="group"') == len(found.groups) > 0
    finally:
        release.set()
        engine.close()


def test_cli_says_how_far_the_pass_has_got(planted):
    """`glimpse duplicates` on a large collection runs for minutes: off a terminal (cron mail, a log) it says
    how far each stage has got, every GLIMPSE_PROGRESS_EVERY seconds (a bar on a terminal)."""
    from search.vectors.duplicates import STAGES

    images = len(list(planted[0].iterdir()))
    out = glimpse_cmd("duplicates", "--threshold", THRESHOLD, home=planted[1], env={"GLIMPSE_PROGRESS_EVERY": "0"})
    for stage in STAGES[:3]:
        assert f"{stage}: {images}/{images} images" in out.stderr, out.stderr
    assert f"{STAGES[3]}: " in out.stderr
    assert out.stdout.startswith(glimpse_cmd("duplicates", "--threshold", THRESHOLD, home=planted[1]).stdout[:40])
