"""Hybrid search through the real CLI and API: keyword (FTS5) matches on captions, file names and folders
fused with the vision ranking; the modes; negative terms; hostile FTS syntax; the keyword index kept in
step with every index run. The tiny model's vision ranking is noise, so a keyword match ranking first is
the fusion's doing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import draw_image, glimpse_cmd, make_images

CAPTIONS = {
    "img_0003.png": "a zebra crossing the savanna",
    "img_0005.png": "a cat on a sofa",
    "img_0006.png": "a cat and a dog",
    "img_0007.png": "TOP-SECRET-PASSWORD-hunter2",
}


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("hybrid")
    root = base / "photos"
    make_images(root, 14)
    draw_image(500).save(root / "IMG_2041-redCar.png")
    draw_image(501).save(root / "scan-ticket42.png")
    make_images(root / "Holidays2023", 2, start=600)
    manifest = base / "captions.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"photos/{n}", "caption": c}) + "\n" for n, c in CAPTIONS.items()))
    home = base / "home"
    glimpse_cmd("index", str(root), "--captions", str(manifest), "--model", tiny_model, "--workers", "0", home=home)
    return home, root


def run(home, *args, check=True):
    return glimpse_cmd("search", *args, home=home, check=check)


def found(home, *args) -> list[dict]:
    return json.loads(run(home, *args, "--json").stdout)


def names(results) -> list[str]:
    return [r["path"].rsplit("/", 1)[1] for r in results]


@pytest.fixture(scope="module")
def api(hybrid):
    """The JSON API over the module's index (a real app; the CLI's own paths are tested through the CLI)."""
    from search.engine import Engine
    from search.paths import Paths
    from web.app import create_app

    engine = Engine(Paths.resolve(str(hybrid[0])))
    client = create_app(engine, config={"GLIMPSE_ALLOWED_HOSTS": ["localhost"]}).test_client()
    client.engine = engine
    yield client
    engine.close()


def search(api, q, **params) -> list[dict]:
    resp = api.get("/api/search", query_string={"q": q, **params})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["results"]


def test_a_caption_word_finds_its_image_first(hybrid, api):
    home, _ = hybrid
    top = found(home, "zebra", "-k", "5")[0]  # the CLI's default mode is auto
    assert top["path"].endswith("/img_0003.png")
    assert "keywords" in top["matched"]
    assert top["matched_text"] == CAPTIONS["img_0003.png"]
    assert [top["matched_text"][a:b] for a, b in top["matched_spans"]] == ["zebra"]
    assert names(search(api, "a zebra on the savanna"))[0] == "img_0003.png"
    # images mode: the vision ranking alone, which the tiny random model does not bend to "zebra"
    assert all(r["matched"] == ["image"] for r in search(api, "zebra", mode="images"))


def test_a_file_name_word_finds_its_image(api):
    for word in ("car", "2041", "RED"):
        assert names(search(api, word, k=3))[0] == "IMG_2041-redCar.png", word
    top = search(api, "red car")[0]
    assert top["matched_text"] == "IMG_2041-redCar.png"
    assert [top["matched_text"][a:b] for a, b in top["matched_spans"]] == ["red", "Car"]


def test_words_with_digits_are_found_in_captions_and_file_names(api):
    # A caption keeps "hunter2" one word (FTS5's tokenizer), a file name splits it ("ticket 42"): both are found.
    for q in ("hunter2", "HUNTER2", "password", "top secret"):
        assert names(search(api, q, mode="keywords"))[:1] == ["img_0007.png"], q
    top = search(api, "hunter2", mode="keywords")[0]
    assert [top["matched_text"][a:b] for a, b in top["matched_spans"]] == ["hunter2"]
    for q in ("ticket42", "scan ticket 42"):
        assert names(search(api, q, mode="keywords"))[:1] == ["scan-ticket42.png"], q


def test_folder_names_are_keywords_relative_to_the_root(api):
    got = search(api, "holidays", mode="keywords")
    assert sorted(names(got)) == ["img_0600.png", "img_0601.png"]
    assert all(r["score"] is None and r["matched"] == ["keywords"] for r in got)
    assert search(api, "photos", mode="keywords") == []  # the root's own path is no keyword


def test_images_mode_is_the_plain_vision_ranking(api):
    from search.query.kinds import TextQuery

    engine = api.engine
    rows = engine.store.get_images(range(1, 100))
    vecs = engine.vectors_of([i for i, r in rows.items() if r.status == "indexed"])
    for text in ("zebra", "a cat - dog", "2:red car + sofa"):
        q = engine.query_vector(TextQuery(text))
        want = sorted(vecs, key=lambda i: -float(vecs[i] @ q))[:10]
        got = search(api, text, mode="images", k=10)
        assert [r["id"] for r in got] == want
        assert np.allclose([r["score"] for r in got], [float(vecs[i] @ q) for i in want], atol=1e-4)


def test_auto_without_a_keyword_match_is_the_vision_page_and_reads_only_its_rows(api, monkeypatch):
    """No word of the query in the keyword index: auto gives the images-mode page, and loads only that
    page's rows (it loaded the whole fusion pool of 100: at 10M, ~100 ms of random row reads a query)."""
    store = api.engine.store
    asked: list[int] = []
    real = store.result_rows  # what hydrating results reads (search.engine)
    monkeypatch.setattr(store, "result_rows", lambda ids: asked.extend(ids) or real(ids))
    got = search(api, "xylophone quartet", k=3)
    assert asked and len(asked) <= 4  # the page, plus one to know whether another follows
    assert all(r["matched"] == ["image"] for r in got)
    assert [r["id"] for r in got] == [r["id"] for r in search(api, "xylophone quartet", k=3, mode="images")]
    pages = search(api, "xylophone quartet", k=3) + search(api, "xylophone quartet", k=3, page=1)
    assert [r["id"] for r in pages] == [r["id"] for r in search(api, "xylophone quartet", k=6)]


def test_negative_terms_demote_keyword_hits(api):
    assert set(names(search(api, "cat", mode="keywords"))) == {"img_0005.png", "img_0006.png"}
    assert names(search(api, "cat - dog", mode="keywords")) == ["img_0005.png"]
    everything = names(search(api, "cat - dog", k=100))
    assert everything[0] == "img_0005.png" and everything[-1] == "img_0006.png"


def test_filters_and_paging_apply_to_hybrid_results(api, hybrid):
    _, root = hybrid
    inside = search(api, "zebra", folder=str(root / "Holidays2023"))
    assert sorted(names(inside)) == ["img_0600.png", "img_0601.png"]
    assert search(api, "zebra", min_score="0.999") == []  # keyword hits are cut by their cosine too
    whole = search(api, "cat sofa", k=10)
    pages = search(api, "cat sofa", k=5) + search(api, "cat sofa", k=5, page=1)
    assert [r["id"] for r in pages] == [r["id"] for r in whole]


HOSTILE = [
    '"', '""', 'zebra"', "NEAR(zebra cat", "zebra*", "^zebra", "path:zebra", "captions:zebra", "a AND", "((", "OR",
    "NOT cat", "-", "{name}: car", "\x00zebra", "zebra " * 500,
]  # fmt: skip


def test_hostile_fts_syntax_is_just_words(api, hybrid):
    for q in HOSTILE:
        for mode in ("auto", "keywords"):
            resp = api.get("/api/search", query_string={"q": q, "mode": mode})
            assert resp.status_code in (200, 400), (q, resp.status_code)
            assert resp.is_json
    assert names(search(api, 'NEAR(zebra"', mode="keywords")) == ["img_0003.png"]
    html = api.get("/", query_string={"q": "zebra*"})
    assert html.status_code == 200 and b"<mark>zebra</mark>" in html.data
    assert names(found(hybrid[0], "path:zebra*", "--mode", "keywords")) == ["img_0003.png"]


def test_a_bad_mode_names_the_allowed_ones(hybrid, api):
    proc = run(hybrid[0], "zebra", "--mode", "fuzzy", check=False)
    assert proc.returncode == 2 and "'auto', 'images', 'captions', 'keywords'" in proc.stderr
    resp = api.get("/api/search?q=zebra&mode=fuzzy")
    assert resp.status_code == 400 and "auto, images, captions, keywords" in resp.get_json()["error"]


def test_the_migration_fills_the_keyword_index_from_existing_rows(hybrid, tmp_path):
    from search.store.migrate import downgrade

    home, _ = hybrid
    old = tmp_path / "old-home"
    shutil.copytree(home, old)
    downgrade(old / "glimpse.db", "0003")  # the database as it was before the keyword index
    assert found(old, "zebra", "--mode", "keywords")[0]["path"].endswith("/img_0003.png")  # upgraded on open


def test_the_keyword_index_follows_adds_moves_captions_and_deletes(tmp_path, glimpse, tiny_model):
    root = tmp_path / "pics"
    root.mkdir()
    draw_image(1).save(root / "sunsetBeach.png")
    make_images(root, 3)
    glimpse("index", str(root), "--model", tiny_model, "--workers", "0")

    def kw(word):
        return names(json.loads(glimpse("search", word, "--mode", "keywords", "--json").stdout))

    assert kw("sunset") == ["sunsetBeach.png"]
    (root / "trips").mkdir()
    (root / "sunsetBeach.png").rename(root / "trips" / "lighthouseDay.png")  # renamed and moved: same bytes
    draw_image(2000).save(root / "newKite.png")
    glimpse("reindex")
    assert kw("sunset") == [] and kw("lighthouse") == ["lighthouseDay.png"] and kw("trips") == ["lighthouseDay.png"]
    assert kw("kite") == ["newKite.png"]
    manifest = tmp_path / "more.jsonl"
    manifest.write_text(json.dumps({"path": str(root / "newKite.png"), "caption": "a windsurfer at dusk"}) + "\n")
    glimpse("index", str(root), "--captions", str(manifest))
    assert kw("windsurfer") == ["newKite.png"]
    (root / "newKite.png").unlink()
    (root / "trips" / "lighthouseDay.png").unlink()
    glimpse("reindex")
    assert kw("kite") == [] and kw("windsurfer") == [] and kw("lighthouse") == []
