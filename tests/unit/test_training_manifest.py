"""training.data.read_manifest reads caption manifests through the indexer's reader."""

from __future__ import annotations

import json

from indexer.captions import read_manifest as index_manifest
from training.data import read_manifest


def test_training_reads_the_keys_and_skips_the_rows_the_indexer_does(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")
    rows = [
        {"path": "a.png", "caption": "red circle", "group": "circle", "style": "filled", "license": "CC0"},
        {"image": "b.png", "text": "blue square"},  # the indexer's other key names
        {"path": "a.png", "captions": ["a red disc", "red circle"], "group": "ignored: not the first row"},
        {"path": "c.png"},  # no caption
        {"caption": "no path"},
        {"path": "c.png", "captions": "one caption as text"},
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")

    warned: list[str] = []
    records = read_manifest(manifest, warn=warned.append)
    index_warned: list[str] = []
    want = index_manifest(manifest, warn=index_warned.append)

    assert {r.path: r.captions for r in records} == want  # same images, same captions, same order
    assert [r.path for r in records] == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert warned == index_warned and [w.split(": skipped: ")[0] for w in warned] == [
        f"{manifest}:4",
        f"{manifest}:5",
        f"{manifest}:6",
    ]
    a, b, c = records
    assert (a.group, a.style, a.meta) == ("circle", "filled", {"license": "CC0"})
    assert a.captions == ["red circle", "a red disc"]
    assert (b.group, b.style, b.meta) == (b.path, "", {})  # no group: the image is its own concept
    assert c.captions == ["one caption as text"]
