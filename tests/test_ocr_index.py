"""Issue 26: the OCR stage through the real CLI and the real reader (RapidOCR on a few small images).

A word in an image is found through the store's text read; a code's prefix too; an absent word is not;
text at 180° and text upright only by its EXIF orientation are read; a changed image is read again; a
kill -9 mid-reading loses only the batch in flight and the next run carries on; an image that cannot be
read, or passes the time limit, is a warning in the job record and the run ends ok.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from search.store.database import Store
from search.store.ocr import text_match
from tests.conftest import REPO, glimpse_cmd

pytest.importorskip("rapidocr")


def text_image(text: str, size=(360, 120), font_size: int = 36) -> Image.Image:
    img = Image.new("RGB", size, "white")
    font = ImageFont.load_default(size=font_size)
    ImageDraw.Draw(img).text((16, (size[1] - font_size) // 2), text, fill="black", font=font)
    return img


def found(db: Path, *words: str) -> list[int]:
    store = Store(db)
    try:
        match = text_match(words)
        assert match is not None
        return [i for i, _ in store.text_ranking(match, 10)]
    finally:
        store.close()


def ids_by_name(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {os.path.basename(p): i for i, p in con.execute("SELECT id, path FROM images")}


def ocr_rows(db: Path) -> dict[int, tuple]:
    with sqlite3.connect(db) as con:
        return {r[0]: r[1:] for r in con.execute("SELECT image_id, text, error, read_at FROM ocr_images")}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model):
    """One home indexed with OCR on: plain, 180°, EXIF-rotated, code, and no-text images."""
    root = tmp_path_factory.mktemp("ocr")
    pics, home = root / "pics", root / "home"
    pics.mkdir()
    text_image("Invoice KX4471B").save(pics / "a.png")
    text_image("Harbour ferry").rotate(180).save(pics / "upside.png")
    sideways = text_image("Bakery open").rotate(90, expand=True)  # stored sideways, shown upright by EXIF
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    sideways.save(pics / "sideways.jpg", quality=95, exif=exif)
    Image.new("RGB", (160, 120), (110, 150, 90)).save(pics / "plain.png")
    run = glimpse_cmd("index", str(pics), "--model", tiny_model, "--ocr", home=home)
    return home, pics, run


def test_words_prefixes_and_absent_words(indexed):
    home, _, run = indexed
    db = home / "glimpse.db"
    ids = ids_by_name(db)
    assert found(db, "invoice") == [ids["a.png"]]
    assert found(db, "KX447") == [ids["a.png"]]  # a code's prefix
    assert found(db, "zebra") == []
    assert found(db, "zebra", "walrus") == []
    rows = ocr_rows(db)
    assert set(rows) == set(ids.values())  # every image read, the one without text too
    assert rows[ids["plain.png"]][0] is None


def test_rotated_text_is_read(indexed):
    home, _, _ = indexed
    db = home / "glimpse.db"
    ids = ids_by_name(db)
    assert found(db, "ferry") == [ids["upside.png"]]  # 180°: the angle classifier
    assert found(db, "bakery") == [ids["sideways.jpg"]]  # upright by its EXIF orientation


def test_boxes_are_normalised_to_the_upright_image(indexed):
    home, _, _ = indexed
    store = Store(home / "glimpse.db")
    try:
        ids = ids_by_name(home / "glimpse.db")
        got = store.text_of([ids["a.png"], ids["upside.png"]])
    finally:
        store.close()
    (line,) = got[ids["a.png"]].lines
    assert line.text == "Invoice KX4471B" and line.confidence > 0.9
    xs, ys = line.box[0::2], line.box[1::2]
    assert max(xs) <= 1 and min(ys) >= 0.1 and max(ys) <= 0.9 and min(xs) < 0.2  # left side, middle band
    (upside,) = got[ids["upside.png"]].lines
    assert min(upside.box[0::2]) > 0.2  # rotated: the text sits on the right now


def test_stats_show_text_counts(indexed):
    home, _, _ = indexed
    stats = json.loads(glimpse_cmd("stats", "--json", home=home).stdout)
    ocr = stats["ocr"]
    assert (ocr["read"], ocr["with_text"], ocr["pending"], ocr["failed"]) == (4, 3, 0, 0)
    assert ocr["engine"].startswith("rapidocr ")
    assert stats["jobs"][0]["ocr_read"] == 4


def test_search_finds_a_word_in_an_image(indexed):
    """Through the query path: the image text is a word source (search/query/image_text.py)."""
    from search.engine import Engine
    from search.paths import Paths
    from search.query.kinds import Filters, Paging, TextQuery

    home, _, _ = indexed
    engine = Engine(Paths.resolve(home))

    def search(text: str, mode: str, **filters) -> list:
        return engine.search(TextQuery(text, mode=mode), Filters(**filters), Paging(k=10)).results

    (hit,) = search("KX447", "keywords")
    assert os.path.basename(hit.path) == "a.png" and hit.matched == ["text"]
    assert hit.text == "Invoice KX4471B" and hit.text_spans == [[8, 15]]  # the code its prefix found, marked
    assert hit.matched_text is None  # no caption or file name matched
    assert search("zebra", "keywords") == []
    top = search("ferry", "auto", min_score_auto=True)  # auto mode: a text hit counts like any keyword hit
    assert os.path.basename(top[0].path) == "upside.png" and "text" in top[0].matched
    assert [top[0].text[a:b] for a, b in top[0].text_spans or []] == ["ferry"]
    # Every result carries its image's text, marked or not; an image without text has none.
    shown = {os.path.basename(r.path): (r.text, r.text_spans) for r in search("bakery", "auto")}
    assert shown["sideways.jpg"][0] == "Bakery open" and shown["sideways.jpg"][1] == [[0, 6]]
    assert shown["a.png"] == ("Invoice KX4471B", []) and shown["plain.png"] == (None, None)


def test_api_results_carry_the_text_as_the_schema_says(indexed):
    import jsonschema

    from search.paths import Paths
    from web.app import create_app
    from web.openapi import openapi_document

    home, _, _ = indexed
    app = create_app(Paths.resolve(home), config={"GLIMPSE_ALLOWED_HOSTS": ["localhost"]})
    client = app.test_client()
    resp = client.get("/api/search?q=kx447&mode=keywords&k=5")
    assert resp.status_code == 200
    body = resp.get_json()
    schema = {"$ref": "#/components/schemas/SearchResponse", "components": openapi_document()["components"]}
    jsonschema.validate(body, schema)
    (hit,) = body["results"]
    assert (hit["matched"], hit["text"], hit["text_spans"]) == (["text"], "Invoice KX4471B", [[8, 15]])
    ocr = client.get("/api/stats").get_json()["ocr"]  # images read, with text, pending, the reader
    assert (ocr["read"], ocr["with_text"], ocr["pending"]) == (4, 3, 0) and ocr["engine"].startswith("rapidocr ")
    # The card marks the word and links to the detail page with the words it matched.
    page = client.get("/?q=kx447&mode=keywords").get_data(as_text=True)
    assert '<p class="ocr" title="text in the image">Invoice <mark>KX4471B</mark></p>' in page
    assert f'href="/image/{hit["id"]}?q=KX4471B"' in page


def test_metrics_show_text_reading(indexed):
    from prometheus_client.parser import text_string_to_metric_families

    from search.paths import Paths
    from web.app import create_app

    home, _, _ = indexed
    app = create_app(Paths.resolve(home), config={"GLIMPSE_ALLOWED_HOSTS": ["localhost"]})
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    samples = {s.name: s.value for f in text_string_to_metric_families(resp.get_data(as_text=True)) for s in f.samples}
    assert samples["glimpse_ocr_images_read"] == 4
    assert samples["glimpse_ocr_images_with_text"] == 3
    assert samples["glimpse_ocr_images_pending"] == 0
    assert samples["glimpse_ocr_last_job_images"] == 4 and samples["glimpse_ocr_last_job_failures"] == 0
    assert samples["glimpse_ocr_last_job_images_per_second"] > 0


def test_a_changed_image_is_read_again_and_only_it(indexed, tiny_model):
    home, pics, _ = indexed
    db = home / "glimpse.db"
    before = ocr_rows(db)
    text_image("Closed Mondays").save(pics / "a.png")
    glimpse_cmd("reindex", "--ocr", home=home)
    after = ocr_rows(db)
    ids = ids_by_name(db)
    assert found(db, "mondays") == [ids["a.png"]]
    assert found(db, "invoice") == []
    assert {i for i in after if after[i][2] != before[i][2]} == {ids["a.png"]}  # read_at moved for it alone
    assert json.loads(glimpse_cmd("stats", "--json", home=home).stdout)["jobs"][0]["ocr_read"] == 1


def test_no_ocr_reads_nothing(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    pics.mkdir()
    text_image("Silent").save(pics / "s.png")
    glimpse_cmd("index", str(pics), "--model", tiny_model, "--no-ocr", home=tmp_path / "h")
    assert ocr_rows(tmp_path / "h" / "glimpse.db") == {}
    stats = json.loads(glimpse_cmd("stats", "--json", home=tmp_path / "h").stdout)
    assert stats["ocr"]["pending"] == 1


def test_failed_and_timed_out_images_are_warnings_and_the_run_completes(tmp_path, tiny_model):
    pics, home = tmp_path / "pics", tmp_path / "h"
    pics.mkdir()
    text_image("Platform 9").save(pics / "good.png")
    text_image("Broken").save(pics / "bad.png")
    glimpse_cmd("index", str(pics), "--model", tiny_model, "--no-ocr", home=home)
    # Garbage of the same size and time: the scan sees no change, the reader cannot decode it.
    bad = pics / "bad.png"
    st = bad.stat()
    bad.write_bytes(b"\0" * st.st_size)
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    glimpse_cmd("reindex", "--ocr", home=home)
    stats = json.loads(glimpse_cmd("stats", "--json", home=home).stdout)
    job = stats["jobs"][0]
    assert job["outcome"] == "ok" and job["failed"] == 0
    assert (job["ocr_read"], job["ocr_failed"]) == (2, 1)
    assert any("text not read" in w and "bad.png" in w for w in job["warnings"])
    assert (stats["ocr"]["read"], stats["ocr"]["failed"], stats["images_failed"]) == (2, 1, 0)
    db = home / "glimpse.db"
    assert found(db, "platform") == [ids_by_name(db)["good.png"]]
    # A limit nothing can meet: every image times out, the run still ends ok.
    glimpse_cmd("reindex", "--ocr", "--reocr", home=home, env={"GLIMPSE_OCR_TIMEOUT": "0.001"})
    job = json.loads(glimpse_cmd("stats", "--json", home=home).stdout)["jobs"][0]
    assert job["outcome"] == "ok" and (job["ocr_read"], job["ocr_failed"]) == (2, 2)
    assert any("within the 0.001s limit" in w for w in job["warnings"])


def _kill_mid_reading(home: Path, *args: str, once: Callable[[], bool]) -> None:
    """Run ``glimpse reindex --ocr ARGS`` and kill -9 it as soon as ``once()`` holds."""
    env = dict(os.environ, GLIMPSE_HOME=str(home), GLIMPSE_OCR="on")
    proc = subprocess.Popen(
        [sys.executable, "-m", "glimpse.cli", "reindex", "--ocr", *args],
        cwd=str(REPO),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the workers die with it (PR_SET_PDEATHSIG), as under a real kill
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not once():
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_mid_reading_then_resume(tmp_path, tiny_model):
    from indexer.ocr import BATCH

    pics, home = tmp_path / "pics", tmp_path / "h"
    pics.mkdir()
    n = 3 * BATCH
    for i in range(n):
        text_image(f"Lot {i:03d} ZQ{i:03d}", size=(240, 120), font_size=28).save(pics / f"t{i:03d}.png")
    glimpse_cmd("index", str(pics), "--model", tiny_model, "--no-ocr", home=home)
    db = home / "glimpse.db"
    _kill_mid_reading(home, once=lambda: len(_read(db)) >= BATCH)
    first = _read(db)
    assert 0 < len(first) < n and len(first) % BATCH == 0  # whole batches only
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.execute("INSERT INTO ocr_fts(ocr_fts) VALUES ('integrity-check')")
    glimpse_cmd("reindex", "--ocr", home=home)
    final = _read(db)
    assert len(final) == n
    assert {i: final[i] for i in first} == first  # nothing committed was read again
    ids = ids_by_name(db)
    assert found(db, "ZQ007") == [ids["t007.png"]]
    jobs = json.loads(glimpse_cmd("stats", "--json", home=home).stdout)["jobs"]
    assert [j["outcome"] for j in jobs[:2]] == ["ok", "interrupted"]
    assert jobs[0]["ocr_read"] == n - len(first)

    # An interrupted --reocr is finished by the next run, a plain one: what it re-read is not read a third time.
    _kill_mid_reading(home, "--reocr", once=lambda: sum(_read(db)[i] != final[i] for i in final) >= BATCH)
    again = _read(db)
    reread = {i for i in again if again[i] != final[i]}
    assert 0 < len(reread) < n and len(reread) % BATCH == 0
    assert found(db, "ZQ007") == [ids["t007.png"]]  # the text stays searchable while it waits
    assert json.loads(glimpse_cmd("stats", "--json", home=home).stdout)["ocr"]["pending"] == n - len(reread)
    glimpse_cmd("reindex", "--ocr", home=home)
    last = _read(db)
    assert all(last[i] != final[i] for i in last)  # every image read again since the --reocr began
    assert {i: last[i] for i in reread} == {i: again[i] for i in reread}
    stats = json.loads(glimpse_cmd("stats", "--json", home=home).stdout)
    assert stats["ocr"]["pending"] == 0 and stats["jobs"][0]["ocr_read"] == n - len(reread)


def test_a_budget_too_short_for_the_readers_starts_none(tmp_path, tiny_model):
    from indexer.ocr import STARTUP_SECONDS

    pics, home = tmp_path / "pics", tmp_path / "h"
    pics.mkdir()
    text_image("Night bus").save(pics / "n.png")
    glimpse_cmd("index", str(pics), "--model", tiny_model, "--no-ocr", home=home)
    minutes = STARTUP_SECONDS / 60 / 4
    run = glimpse_cmd("reindex", "--ocr", "--ocr-budget", f"{minutes:g}", home=home)
    assert "reading text in" not in run.stderr  # the readers were never started
    stats = json.loads(glimpse_cmd("stats", "--json", home=home).stdout)
    job = stats["jobs"][0]
    assert job["outcome"] == "ok" and job["ocr_read"] == 0 and stats["ocr"]["pending"] == 1
    assert any("budget leaves less than the readers' start-up" in w for w in job["warnings"])
    run = glimpse_cmd("reindex", "--ocr", "--ocr-budget", "10", home=home)  # a budget that fits: read
    assert "reading text in 1 images" in run.stderr
    assert found(home / "glimpse.db", "night") == [ids_by_name(home / "glimpse.db")["n.png"]]


def _read(db: Path) -> dict[int, str]:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return {i: t for i, t in con.execute("SELECT image_id, read_at FROM ocr_images")}
    except sqlite3.OperationalError:
        return {}
