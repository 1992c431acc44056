"""A bad caption-manifest row is skipped and reported; it never stops the run.

Through the real CLI: invalid JSON, a row without a path, a numeric caption and
a 1 MB caption beside good rows (JSONL), and a CSV row without a path. The run
exits 0, the good captions are stored, each bad row is listed with its
file:line in `glimpse stats` (text and JSON), and the long caption is cut to
2,000 characters wherever it is shown. A file that cannot be read at all still
fails the run with one line.
"""

from __future__ import annotations

import json
import os

from search.paths import Paths
from search.store.database import Store
from tests.conftest import make_images, search_json

LONG = "a very long caption " * 50_000  # 1 MB


def test_bad_jsonl_rows_are_skipped_and_reported(tmp_path, home, glimpse, tiny_model):
    pics = make_images(tmp_path / "pics", 5)
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"path": "pics/img_0000.png", "caption": "a red square on grass"}),  # 1
                '{"path": "pics/img_0001.png", "caption": "cut off',  # 2: invalid JSON
                json.dumps({"caption": "nobody's picture"}),  # 3: no path
                json.dumps({"path": "pics/img_0002.png", "caption": 12345}),  # 4: a number
                json.dumps({"path": "pics/img_0003.png", "caption": LONG}),  # 5: 1 MB
                json.dumps({"path": "pics/img_0004.png", "captions": ["two blue circles"]}),  # 6
            ]
        )
        + "\n"
    )

    proc = glimpse("index", str(tmp_path / "pics"), "--captions", str(manifest), "--model", tiny_model)
    assert proc.returncode == 0 and "5 embedded" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert f"{manifest}:2: skipped: not valid JSON" in proc.stderr  # the log names each row too

    store = Store(Paths.resolve(home).db)
    stored = {p.name: store.captions_of(store.image_id_for_path(str(p))) for p in pics}
    assert stored == {
        "img_0000.png": ["a red square on grass"],
        "img_0001.png": [],
        "img_0002.png": [],
        "img_0003.png": [LONG.strip()[:2000]],
        "img_0004.png": ["two blue circles"],
    }
    long = next(
        r for r in search_json(glimpse, "--captions", "a very long caption", "-k", "5") if r["path"] == str(pics[3])
    )
    assert long["caption"] == LONG[:2000]

    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["captions"] == 3
    warnings = stats["jobs"][0]["warnings"]
    assert [w.split(": skipped")[0] for w in warnings if "skipped" in w] == [f"{manifest}:{n}" for n in (2, 3, 4)]
    assert "no path" in warnings[1] and "not text" in warnings[2]
    assert any(str(pics[3]) in w and "caption cut from 999,999 to 2,000 characters" in w for w in warnings)
    text = glimpse("stats").stdout
    for n in (2, 3, 4):
        assert f"{manifest}:{n}: skipped" in text


def test_csv_row_without_path_is_skipped_and_reported(tmp_path, home, glimpse, tiny_model):
    pics = make_images(tmp_path / "pics", 2)
    manifest = tmp_path / "captions.csv"
    manifest.write_text(
        "path,caption\npics/img_0000.png,a green field\n,an orphan caption\npics/img_0001.png,a grey sky\n"
    )
    proc = glimpse("index", str(tmp_path / "pics"), "--captions", str(manifest), "--model", tiny_model)
    assert proc.returncode == 0 and "2 captions embedded" in proc.stdout
    job = json.loads(glimpse("stats", "--json").stdout)["jobs"][0]
    assert job["warnings"] == [f"{manifest}:3: skipped: no path (expected 'path')"]
    assert f"{manifest}:3: skipped" in glimpse("stats").stdout
    store = Store(Paths.resolve(home).db)
    assert [store.captions_of(store.image_id_for_path(str(p))) for p in pics] == [["a green field"], ["a grey sky"]]


def test_unreadable_manifest_still_fails_the_run_in_one_line(tmp_path, glimpse, tiny_model):
    make_images(tmp_path / "pics", 1)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"path": "pics/img_0000.png", "caption": "caf\xe9"}\n')
    no_columns = tmp_path / "cols.csv"
    no_columns.write_text("file,words\nx.png,y\n")
    for manifest, says in (
        (latin1, f"{latin1}:1: not UTF-8"),
        (no_columns, "CSV needs 'path' and 'caption'"),
        (tmp_path / "missing.jsonl", "caption file not found"),
    ):
        proc = glimpse("index", str(tmp_path / "pics"), "--captions", str(manifest), "--model", tiny_model, check=False)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert says in proc.stderr.strip().splitlines()[-1]


def test_rows_naming_no_indexed_image_are_listed_with_the_bad_rows(tmp_path, home, glimpse, tiny_model):
    make_images(tmp_path / "pics", 1)
    manifest = tmp_path / "captions.jsonl"
    rows = [
        {"path": "pics/img_0000.png", "caption": "a kept caption"},  # 1
        {"path": "../../etc/passwd", "caption": "climbs out"},  # 2
        {"path": "/etc/hostname", "caption": "absolute, outside"},  # 3
        {"path": "pics/nothing-here.png", "caption": "inside, no such image"},  # 4
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = glimpse("index", str(tmp_path / "pics"), "--captions", str(manifest), "--model", tiny_model)
    assert "1 captions embedded" in proc.stdout
    climbed = os.path.normpath(tmp_path / "../../etc/passwd")
    expected = [
        f"{manifest}:2: skipped: {climbed} lies outside the indexed folders",
        f"{manifest}:3: skipped: /etc/hostname lies outside the indexed folders",
        f"{manifest}:4: skipped: {tmp_path / 'pics' / 'nothing-here.png'} is not an indexed image",
    ]
    assert json.loads(glimpse("stats", "--json").stdout)["jobs"][0]["warnings"] == expected
    text = glimpse("stats").stdout
    assert all(f"warning: {line}" in text for line in expected)
    assert all(line in proc.stderr for line in expected)  # and in the log, one line each
