"""The engine end to end: index folders + captions, search, incremental runs, bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import draw_image, make_images, search_json
from indexer.pipeline import ModelMismatch, Options, run_job
from search.encoders.torch_clip import Encoder
from search.engine import Engine, Filters
from search.paths import Paths
from search.query.kinds import FileQuery, Paging, SimilarQuery, TextQuery
from search.store.database import Store
from search.store.schema import ImageRow, unpack_vectors


def index(home, roots, model, **kw):
    return run_job(Paths.resolve(home), [str(r) for r in roots], Options(model=model, workers=0, **kw))


@pytest.fixture
def corpus(tmp_path, home, tiny_model):
    """24 distinct images + a JSONL manifest with one unique caption each."""
    folder = tmp_path / "photos"
    paths = make_images(folder, 24)
    manifest = tmp_path / "captions.jsonl"
    with open(manifest, "w") as f:
        for i, p in enumerate(paths):
            f.write(json.dumps({"path": f"photos/{p.name}", "caption": f"caption number {i} of a scene"}) + "\n")
    index(home, [folder], tiny_model, captions=str(manifest))
    return folder, paths


def search(engine, query, k=10, page=0, filters=None):
    """One page of results; a plain string is a text query."""
    query = TextQuery(query) if isinstance(query, str) else query
    return engine.search(query, filters, Paging(k=k, page=page)).results


def brute_force(home, dim, query_vec):
    store = Store(Paths.resolve(home).db)
    with store.session() as s:
        rows = [(r.id, r.vector) for r in s.query(ImageRow).filter(ImageRow.vector.isnot(None))]
    vecs = unpack_vectors([v for _, v in rows], dim)
    scores = vecs @ query_vec
    order = np.argsort(-scores, kind="stable")
    return [rows[i][0] for i in order], scores[order]


def test_text_ranking_equals_brute_force_cosine(corpus, home):
    engine = Engine(Paths.resolve(home))
    for query in ("a red bicycle", "caption number 3 of a scene", "2:beach + sunset - people"):
        results = search(engine, query, k=24)
        qvec = engine.query_vector(TextQuery(query))
        ids, scores = brute_force(home, engine.encoder.dim, qvec)
        assert [r.id for r in results] == ids
        np.testing.assert_allclose([r.score for r in results], scores, atol=1e-5)


def test_pagination_continues_the_ranking(corpus, home):
    engine = Engine(Paths.resolve(home))
    full = [r.id for r in search(engine, "anything", k=24)]
    pages = [r.id for p in range(3) for r in search(engine, "anything", k=8, page=p)]
    assert pages == full


def test_image_query_finds_itself_first(corpus, home):
    _, paths = corpus
    engine = Engine(Paths.resolve(home))
    for p in paths[:5]:
        top = search(engine, FileQuery(str(p)), k=3)[0]
        assert top.path == str(p)
        assert top.score > 0.99


def test_caption_query_finds_its_image_through_caption_index(corpus, home):
    _, paths = corpus
    engine = Engine(Paths.resolve(home))
    top = search(engine, TextQuery("caption number 7 of a scene", mode="captions"), k=5)
    assert top[0].path == str(paths[7])
    assert top[0].matched_caption == "caption number 7 of a scene"
    assert len({r.id for r in top}) == len(top)  # each image once


def test_similar_excludes_itself_and_matches_brute_force(corpus, home):
    engine = Engine(Paths.resolve(home))
    first = search(engine, "x", k=1)[0]
    vec = engine.store.vectors_of([first.id], engine.encoder.dim)[first.id]
    ids, _ = brute_force(home, engine.encoder.dim, vec)
    got = [r.id for r in search(engine, SimilarQuery(first.id), k=5)]
    assert first.id not in got
    assert got == [i for i in ids if i != first.id][:5]


def test_min_score_cuts_results(corpus, home):
    engine = Engine(Paths.resolve(home))
    all_results = search(engine, "a scene", k=24)
    cut = all_results[5].score
    kept = search(engine, "a scene", k=24, filters=Filters(min_score=cut))
    assert kept and all(r.score >= cut for r in kept)
    assert len(kept) == sum(1 for r in all_results if r.score >= cut)


class CountingEncoder(Encoder):
    calls = 0

    def encode_pixels(self, batch):
        CountingEncoder.calls += len(batch)
        return super().encode_pixels(batch)

    def encode_texts(self, texts):
        CountingEncoder.calls += len(texts)
        return super().encode_texts(texts)


def test_second_run_embeds_nothing(corpus, home, tiny_model):
    folder, _ = corpus
    from search.encoders.model_spec import ModelSpec

    enc = CountingEncoder(ModelSpec.parse(tiny_model), device="cpu")
    CountingEncoder.calls = 0
    counts, _ = run_job(Paths.resolve(home), [str(folder)], Options(workers=0), encoder=enc)
    assert CountingEncoder.calls == 0
    assert counts.embedded == 0 and counts.unchanged == 24


def test_rename_and_move_reuse_vector(corpus, home, tiny_model):
    folder, paths = corpus
    store = Store(Paths.resolve(home).db)
    before = store.get_image(store.image_id_for_path(str(paths[0])))
    dim = store.get_model().dim
    before_vec = store.vectors_of([before.id], dim)[before.id]
    (folder / "sub").mkdir()
    moved = folder / "sub" / "renamed.png"
    os.rename(paths[0], moved)
    from search.encoders.model_spec import ModelSpec

    enc = CountingEncoder(ModelSpec.parse(tiny_model), device="cpu")
    CountingEncoder.calls = 0
    counts, _ = run_job(Paths.resolve(home), [str(folder)], Options(workers=0), encoder=enc)
    assert CountingEncoder.calls == 0
    assert counts.moved == 1 and counts.deleted == 0 and counts.embedded == 0
    after = store.get_image(store.image_id_for_path(str(moved)))
    assert after.id == before.id
    np.testing.assert_array_equal(store.vectors_of([after.id], dim)[after.id], before_vec)
    assert store.image_id_for_path(str(paths[0])) is None
    # captions follow the image
    assert store.captions_of(after.id) == ["caption number 0 of a scene"]
    engine = Engine(Paths.resolve(home))
    assert search(engine, FileQuery(str(moved)), k=1)[0].path == str(moved)


def test_copy_reuses_vector_and_deleted_file_leaves_results(corpus, home, tiny_model):
    folder, paths = corpus
    shutil.copy(paths[1], folder / "copy.png")
    os.remove(paths[2])
    counts, _ = index(home, [folder], None)
    assert counts.deleted == 1 and counts.embedded == 0 and counts.new == 1
    engine = Engine(Paths.resolve(home))
    found = {r.path for r in search(engine, "anything", k=50)}
    assert str(paths[2]) not in found and str(folder / "copy.png") in found
    assert engine.stats()["images_indexed"] == 24


def test_changed_file_is_re_embedded(corpus, home):
    folder, paths = corpus
    draw_image(999).save(paths[3])
    os.utime(paths[3], (1_000_000, 1_000_000))
    counts, _ = index(home, [folder], None)
    assert counts.changed == 1 and counts.embedded == 1
    engine = Engine(Paths.resolve(home))
    assert search(engine, FileQuery(str(paths[3])), k=1)[0].path == str(paths[3])


def test_bad_files_are_recorded_and_the_run_completes(tmp_path, home, tiny_model):
    folder = tmp_path / "mixed"
    good = make_images(folder, 5)
    (folder / "notes.jpg").write_text("this is not an image")
    (folder / "empty.png").write_bytes(b"")
    data = good[0].read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    jpg = folder / "trunc.jpg"
    draw_image(7, (300, 300)).save(jpg, quality=90)
    jpg.write_bytes(jpg.read_bytes()[:2000])
    # header claims 20000 x 20000 = 400 MP: over the limit, refused without decoding
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")
    counts, _ = index(home, [folder], tiny_model)
    assert counts.embedded == 5
    assert counts.failed == 5
    store = Store(Paths.resolve(home).db)
    failed = dict(store.failed_images())
    assert set(failed) == {
        str(folder / n) for n in ("notes.jpg", "empty.png", "truncated.png", "trunc.jpg", "bomb.png")
    }
    assert "pixel limit" in failed[str(folder / "bomb.png")] or "bomb" in failed[str(folder / "bomb.png")]
    assert all(failed.values())
    # failures are not retried while the file is unchanged
    counts2, _ = index(home, [folder], None)
    assert counts2.failed == 0 and counts2.embedded == 0


def test_transparent_images_get_a_white_background(tiny_encoder):
    from search.media.decode import load_rgb

    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert load_rgb(_save(rgba, "PNG")).getpixel((5, 5)) == (255, 255, 255)
    la = Image.new("LA", (10, 10), (0, 0))
    assert load_rgb(_save(la, "PNG")).getpixel((5, 5)) == (255, 255, 255)
    p = Image.new("P", (10, 10), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    assert load_rgb(_save(p, "PNG", transparency=0)).getpixel((5, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    from search.media.decode import load_rgb

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    buf = _save(img, "JPEG", exif=exif.tobytes())
    assert load_rgb(buf).size == (20, 40)


def _save(img, fmt, **kw):
    import io

    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return buf


def test_scan_skips_hidden_and_resource_forks_and_survives_symlink_loops(tmp_path):
    from indexer.scan import walk_images

    root = tmp_path / "r"
    make_images(root, 2)
    make_images(root / ".hidden", 1)
    (root / "._img_0000.png").write_bytes(b"\0\5\26\7")
    (root / "notes.txt").write_text("x")
    (root / "sub").mkdir()
    make_images(root / "sub", 1, start=10)
    os.symlink(root, root / "sub" / "loop")
    found = sorted(os.path.relpath(e.path, root) for e in walk_images(str(root)))
    assert found == ["img_0000.png", "img_0001.png", os.path.join("sub", "img_0010.png")]


def test_csv_manifest_and_sidecar_captions(tmp_path, home, tiny_model):
    folder = tmp_path / "c"
    paths = make_images(folder, 3)
    (folder / "img_0002.txt").write_text("a sidecar caption\nsecond line caption\n")
    manifest = folder / "caps.csv"
    manifest.write_text('path,caption\nimg_0000.png,"first, with comma"\nimg_0000.png,another one\nimg_0001.png,cat\n')
    index(home, [folder], tiny_model, captions=str(manifest))
    store = Store(Paths.resolve(home).db)
    assert store.captions_of(store.image_id_for_path(str(paths[0]))) == ["first, with comma", "another one"]
    assert store.captions_of(store.image_id_for_path(str(paths[2]))) == ["a sidecar caption", "second line caption"]
    engine = Engine(Paths.resolve(home))
    assert search(engine, TextQuery("second line caption", mode="captions"), k=1)[0].path == str(paths[2])


def test_a_different_model_is_refused_unless_reembed(corpus, home, tmp_path):
    from tiny_model import write_tiny_model

    other = write_tiny_model(tmp_path / "other", seed=1)
    folder, _ = corpus
    with pytest.raises(ModelMismatch, match="--reembed"):
        index(home, [folder], f"local-dir:{other}")
    counts, _ = index(home, [folder], f"local-dir:{other}", reembed=True)
    assert counts.embedded == 24 and counts.captions == 24
    engine = Engine(Paths.resolve(home))
    assert engine.model_spec().name == f"local-dir:{other}"


def test_cli_index_search_json_and_stats(tmp_path, glimpse, tiny_model):
    folder = tmp_path / "cli"
    paths = make_images(folder, 6)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"path": f"cli/{p.name}", "captions": [f"picture {i}"]}) + "\n" for i, p in enumerate(paths))
    )
    out = glimpse("index", str(folder), "--captions", str(manifest), "--model", tiny_model)
    assert "6 embedded" in out.stdout and "1 failed" in out.stdout
    results = search_json(glimpse, "picture 2", "-k", "3", "--mode", "images")  # vision only: cosine order
    assert len(results) == 3
    for r in results:
        assert {"id", "score", "path", "caption"} <= set(r)
        assert os.path.isabs(r["path"])
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    top = search_json(glimpse, "--captions", "picture 2", "-k", "1")[0]
    assert top["path"] == str(paths[2]) and top["caption"] == "picture 2"
    top = search_json(glimpse, "--image", str(paths[4]), "-k", "1")[0]
    assert top["path"] == str(paths[4])
    stats = json.loads(glimpse("stats", "--json").stdout)
    assert stats["images_indexed"] == 6 and stats["images_failed"] == 1 and stats["captions"] == 6
    assert stats["model"]["name"].startswith("local-dir:") and stats["index_version"]
    text = glimpse("stats").stdout
    assert "broken.jpg" in text


def test_cli_errors_and_exit_codes(tmp_path, glimpse, tiny_model):
    assert glimpse("search", "anything", check=False).returncode == 1  # nothing indexed
    assert glimpse("search", check=False).returncode == 2  # usage
    assert glimpse("search", "a", "--image", "x.png", check=False).returncode == 2
    assert glimpse("index", str(tmp_path / "missing"), check=False).returncode in (1, 2)
    folder = tmp_path / "e"
    make_images(folder, 2)
    glimpse("index", str(folder), "--model", tiny_model)
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    proc = glimpse("search", "--image", str(bad), check=False)
    assert proc.returncode == 1 and "error:" in proc.stderr
    proc = glimpse("index", str(folder), "--model", "local-dir:" + str(tmp_path / "nowhere"), check=False)
    assert proc.returncode == 1 and "error:" in proc.stderr


def test_model_load_error_explains_offline_use(tmp_path):
    from search.encoders.model_spec import ModelSpec
    from search.encoders.torch_clip import ModelLoadError

    spec = ModelSpec.parse("ViT-B-32")  # the default zoo model and tag
    assert spec.pretrained and spec.fingerprint() == f"ViT-B-32/{spec.pretrained}"
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: no request leaves the machine
    with pytest.raises(ModelLoadError, match="local-dir:"):
        Encoder(spec, device="cpu")


def test_manifest_aliases_and_paths_relative_to_the_indexed_folder(tmp_path):
    from indexer.captions import ManifestError, read_manifest

    folder = tmp_path / "imgs"
    make_images(folder, 2)
    ann = tmp_path / "annotations"
    ann.mkdir()
    m = ann / "caps.jsonl"
    m.write_text(
        json.dumps({"file_name": "img_0000.png", "text": "one"})
        + "\n"
        + json.dumps({"path": "img_0001.png", "captions": ["two", "two", "deux"]})
        + "\n"
    )
    got = read_manifest(m, [str(folder)])
    assert got == {str(folder / "img_0000.png"): ["one"], str(folder / "img_0001.png"): ["two", "deux"]}
    bad = ann / "bad.jsonl"
    bad.write_text('{"path": "x.png"}\nnot json\n' + json.dumps({"path": "y.png", "caption": "kept"}) + "\n")
    skipped = []
    assert read_manifest(bad, warn=skipped.append) == {str(ann / "y.png"): ["kept"]}
    assert [w.split(": skipped")[0] for w in skipped] == [f"{bad}:1", f"{bad}:2"]
    bad.write_bytes(b'{"path": "x.png", "caption": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match="bad.jsonl:1: not UTF-8"):
        read_manifest(bad)
