"""A sidecar caption file is read again whenever it appears, changes or goes.

A black-box attack found that a ``NAME.txt`` written after ``NAME.jpg`` was indexed was never read,
even after a ``touch`` of the image: only new or changed images had their sidecars looked at. Through
the real CLI: a sidecar added later (with and without a touch), then edited, then deleted; each
reindex stores exactly what the sidecar says (keyword and caption search follow), embeds no image,
and drops the captions of a deleted sidecar from the published caption index.
"""

from __future__ import annotations

import json
import os

from conftest import make_images, search_json
from search.paths import Paths
from search.store.database import Store


def captions(home, path) -> list[str]:
    store = Store(Paths.resolve(str(home)).db)
    try:
        return store.captions_of(store.image_id_for_path(str(path)))
    finally:
        store.close()


def reindex(glimpse) -> str:
    out = glimpse("reindex").stdout
    assert ", 0 embedded," in out, out  # the images did not change: none is embedded again
    return out


def keyword_hits(glimpse, word: str) -> list[str]:
    return [os.path.basename(r["path"]) for r in search_json(glimpse, word, "--mode", "keywords")]


def test_sidecars_written_edited_or_deleted_after_indexing_are_read(tmp_path, home, glimpse, tiny_model):
    pics = make_images(tmp_path / "pics", 3)
    glimpse("index", str(tmp_path / "pics"), "--model", tiny_model)
    late, other = pics[0].with_suffix(".txt"), pics[1].with_suffix(".txt")

    late.write_text("a lighthouse at dusk\n")  # written after its image was indexed, then the image touched
    os.utime(pics[0])
    other.write_text("an orchard in spring\n")  # and one without a touch
    assert "2 captions embedded" in reindex(glimpse)
    assert captions(home, pics[0]) == ["a lighthouse at dusk"] and captions(home, pics[1]) == ["an orchard in spring"]
    assert keyword_hits(glimpse, "lighthouse") == ["img_0000.png"]

    assert "0 captions embedded" in reindex(glimpse)  # nothing changed: nothing read again

    late.write_text("a lighthouse at night\nwaves below\n")
    os.utime(late, (late.stat().st_atime, late.stat().st_mtime + 2))  # same second on a coarse clock
    assert "2 captions embedded" in reindex(glimpse)
    assert captions(home, pics[0]) == ["a lighthouse at night", "waves below"]
    assert keyword_hits(glimpse, "dusk") == [] and keyword_hits(glimpse, "night") == ["img_0000.png"]

    late.unlink()
    reindex(glimpse)
    assert captions(home, pics[0]) == [] and keyword_hits(glimpse, "lighthouse") == []
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["captions"] == 1 and stats["jobs"][0]["index_version"] != stats["jobs"][1]["index_version"]
    found = search_json(glimpse, "--captions", "a lighthouse at night", "-k", "5")  # the caption index
    assert [os.path.basename(r["path"]) for r in found] == ["img_0001.png"]  # holds only the orchard now
