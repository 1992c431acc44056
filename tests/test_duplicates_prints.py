"""Near-duplicates the embedding model does not see: the second candidate source (pixel prints' views).

At ``--threshold 1.0`` the model's candidate stage proposes no pair of these images (every copy moves its
vector), so each group here comes from ``search.vectors.print_candidates``: a transparent drawing
flattened onto black (the shipped model gives it a cosine of ~0.04), 10% crops, a 2-degree rotation. A
different drawing of the same kind is not grouped. Through the real CLI, then the views themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import draw_image, glimpse_cmd
from search.media import pixel_print
from search.vectors import print_candidates
from test_duplicates import crop, drawing, flat


def test_copies_the_model_does_not_pair_are_found_through_the_prints(tmp_path, tiny_model):
    root, home = tmp_path / "art", tmp_path / "home"
    root.mkdir()
    for i in range(6):
        drawing(200 + i).save(root / f"drawing_{i}.png")
        draw_image(i, (240, 180)).save(root / f"photo_{i}.png")
    t, o = drawing(202), draw_image(3, (240, 180))
    flat(t, (0, 0, 0)).save(root / "t_on_black.png")
    crop(t, 0.10).save(root / "t_crop10.png")
    flat(t, (255, 255, 255)).rotate(2, resample=Image.BICUBIC, fillcolor=(255, 255, 255)).save(root / "t_rot2.png")
    crop(o, 0.10).save(root / "o_crop10.png")
    glimpse_cmd("index", str(root), "--model", tiny_model, "--workers", "0", home=home)
    out = json.loads(glimpse_cmd("duplicates", "--threshold", "1.0", "--json", home=home).stdout)
    groups = sorted(sorted(Path(i["path"]).name for i in g["images"]) for g in out["groups"])
    assert groups == [
        ["drawing_2.png", "t_crop10.png", "t_on_black.png", "t_rot2.png"],
        ["o_crop10.png", "photo_3.png"],
    ], out
    assert all(g["verified_by"] == pixel_print.SIGNAL for g in out["groups"])


def test_views_bring_a_crop_and_a_black_flattening_near_their_original(monkeypatch):
    t = drawing(7)
    o = draw_image(8, (240, 180))
    prints = [pixel_print.pixel_print(x) for x in (t, flat(t, (0, 0, 0)), o, crop(o, 0.10), draw_image(9, (240, 180)))]
    rows, whole, vecs, ok = pixel_print.views(pixel_print.decode(prints))
    assert ok.all()

    def best(a: int, b: int) -> float:
        """Highest correlation of any view of ``a`` with a whole view of ``b``."""
        return float((vecs[rows == a] @ vecs[(rows == b) & whole].T).max())

    assert best(1, 0) >= print_candidates.CORRELATION  # on black: the original's black view
    assert best(2, 3) >= print_candidates.CORRELATION  # the original's 10% view: the crop's whole view
    assert best(2, 4) < print_candidates.CORRELATION  # another picture
    ids = np.arange(10, 15)
    a, b = print_candidates.print_pairs(lambda: [(ids, prints)], None, 4)
    assert {(10, 11), (12, 13)} <= set(zip(a.tolist(), b.tolist()))
    assert (12, 14) not in set(zip(a.tolist(), b.tolist()))
    # only live images are paired
    a, b = print_candidates.print_pairs(lambda: [(ids, prints)], np.array([10, 12, 13]), 4)
    assert set(zip(a.tolist(), b.tolist())) == {(12, 13)}
    # a large corpus's index (IVF with 8-bit codes) finds the same pairs
    monkeypatch.setattr(print_candidates, "EXACT_MAX", 2)
    a, b = print_candidates.print_pairs(lambda: [(ids, prints)], None, 4)
    assert {(10, 11), (12, 13)} <= set(zip(a.tolist(), b.tolist()))
