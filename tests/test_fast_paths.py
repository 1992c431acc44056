"""The optimised indexing path returns the vectors plain open_clip would.

Optimised path: DataLoader worker processes, JPEG draft-mode decoding, the PIL
part of preprocessing in the workers and scaling + normalisation batched on
the encoder (``Encoder.encode_pixels``). Reference: ``Image.open(...).convert("RGB")``,
open_clip's own ``preprocess`` and ``model.encode_image``, normalised.

No timing here (speed lives in bench/run.py); only correctness.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import draw_image

# Small and fast, but with the real 224 px input so that draft mode behaves as in production.
FAST_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(scope="module")
def encoder224(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    from search.encoders.torch_clip import Encoder, ModelSpec

    folder = tmp_path_factory.mktemp("models") / "fast224"
    folder.mkdir()
    torch.manual_seed(1)
    model = open_clip.CLIP(**FAST_CONFIG)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": FAST_CONFIG, "preprocess_cfg": {"mean": MEAN, "std": STD}})
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return Encoder(ModelSpec.parse(f"local-dir:{folder}"), device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """JPEGs at phone-camera-like sizes (draft mode kicks in) plus a small PNG and a portrait."""
    folder = tmp_path_factory.mktemp("photos")
    sizes = [(1024, 768), (768, 1024), (1600, 1200), (2048, 1536), (640, 480), (300, 200)]
    paths = []
    for i, size in enumerate(sizes):
        p = folder / f"p{i}.jpg"
        draw_image(100 + i, size).save(p, "JPEG", quality=90)
        paths.append(str(p))
    p = folder / "small.png"
    draw_image(7, (180, 150)).save(p)
    paths.append(str(p))
    return paths


def reference_vectors(enc, paths):
    """Plain open_clip: full decode, its preprocess, encode_image, L2-normalise."""
    with torch.inference_mode():
        x = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in paths])
        v = enc.model.encode_image(x).float()
    return (v / v.norm(dim=-1, keepdim=True)).numpy()


def fast_vectors(enc, paths, workers, draft=True):
    from indexer.load import iter_batches

    size = enc.image_size if draft else None
    out = {}
    for batch in iter_batches(paths, enc.pil_transform, size, batch_size=3, workers=workers):
        assert all(b.error is None for b in batch), [b.error for b in batch]
        vecs = enc.encode_pixels(torch.stack([torch.as_tensor(b.pixels) for b in batch]))
        out.update({b.index: v for b, v in zip(batch, vecs)})
    return np.stack([out[i] for i in range(len(paths))])


def test_split_preprocessing_is_exact_without_draft(encoder224, photos):
    """Workers' uint8 output + batched normalise == open_clip's preprocess, to float rounding."""
    ref = reference_vectors(encoder224, photos)
    got = fast_vectors(encoder224, photos, workers=0, draft=False)
    np.testing.assert_allclose(got, ref, atol=2e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_draft_decoding_matches_reference(encoder224, photos, workers):
    """Draft mode (reduced-scale JPEG decode) changes pixels a little, vectors barely."""
    ref = reference_vectors(encoder224, photos)
    got = fast_vectors(encoder224, photos, workers=workers)
    cos = (got * ref).sum(axis=1)
    assert cos.min() > 0.995, cos
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_workers_do_not_change_results(encoder224, photos):
    a = fast_vectors(encoder224, photos, workers=0)
    b = fast_vectors(encoder224, photos, workers=2)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_encode_pil_matches_indexer_path(encoder224, photos):
    """Query-by-image (engine) and the indexer agree, so a file finds its own vector."""
    from search.media.decode import load_rgb

    imgs = [load_rgb(p, draft_size=encoder224.image_size) for p in photos]
    via_pil = encoder224.encode_pil(imgs)
    via_loader = fast_vectors(encoder224, photos, workers=0)
    np.testing.assert_allclose(via_pil, via_loader, atol=1e-5)


def test_onnx_image_tower_matches_torch(encoder224, photos, tmp_path, monkeypatch):
    """The ONNX Runtime image tower (CPU default) is exported from the same weights and agrees with torch."""
    pytest.importorskip("onnxruntime")
    from search.encoders.torch_clip import Encoder

    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    onnx = Encoder(encoder224.spec, device="cpu", runtime="onnx")
    plain = Encoder(encoder224.spec, device="cpu", runtime="torch")
    assert onnx.backend == "onnx" and plain.backend == "torch"
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx")), "export is cached"
    a = fast_vectors(onnx, photos, workers=0)
    b = fast_vectors(plain, photos, workers=0)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # a second encoder reuses the cached export
    again = Encoder(encoder224.spec, device="cpu", runtime="onnx")
    np.testing.assert_allclose(fast_vectors(again, photos[:2], workers=0), a[:2], atol=1e-6)


def test_unknown_runtime_is_refused(encoder224):
    from search.encoders.torch_clip import Encoder

    with pytest.raises(ValueError, match="runtime"):
        Encoder(encoder224.spec, device="cpu", runtime="tensorrt")


def test_auto_runtime_batches_in_onnx_single_images_in_torch(encoder224, photos, tmp_path, monkeypatch):
    """auto on CPU: ONNX Runtime starts with the first real batch (indexing); queries stay in torch."""
    pytest.importorskip("onnxruntime")
    from search.encoders.torch_clip import ORT_MIN_BATCH, Encoder

    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GLIMPSE_RUNTIME", raising=False)
    enc = Encoder(encoder224.spec, device="cpu")
    one = fast_vectors(enc, photos[:1], workers=0)
    assert enc.backend == "torch"
    paths = (photos * ORT_MIN_BATCH)[:ORT_MIN_BATCH]
    from indexer.load import iter_batches

    batch = next(iter_batches(paths, enc.pil_transform, enc.image_size, batch_size=ORT_MIN_BATCH, workers=0))
    vecs = enc.encode_pixels(torch.stack([torch.as_tensor(b.pixels) for b in batch]))
    assert enc.backend == "onnx"
    np.testing.assert_allclose(vecs[0], one[0], atol=1e-5)


def test_concurrent_encode_streams_store_the_same_vectors_per_file(tiny_model, tmp_path, monkeypatch):
    """Several encoder calls in flight (one per core) must not mix up which vector belongs to which file."""
    from conftest import glimpse_cmd, make_images
    from search.store.database import Store
    from search.store.schema import ImageRow, unpack_vectors

    make_images(tmp_path / "pics", 45, size=(64, 48))
    stored = {}
    for streams in ("1", "3"):
        home = tmp_path / f"home{streams}"
        glimpse_cmd(
            "index",
            str(tmp_path / "pics"),
            "--model",
            tiny_model,
            "--batch-size",
            "8",
            "--workers",
            "2",
            home=home,
            env={"GLIMPSE_ENCODE_STREAMS": streams},
        )
        store = Store(home / "glimpse.db")
        with store.session() as s:
            rows = s.query(ImageRow.path, ImageRow.vector).all()
        vecs = unpack_vectors([v for _, v in rows], 32)
        stored[streams] = {p: v for (p, _), v in zip(rows, vecs)}
        store.close()
    assert len(stored["1"]) == 45 and stored["1"].keys() == stored["3"].keys()
    for path, vec in stored["1"].items():
        np.testing.assert_allclose(stored["3"][path], vec, atol=2e-3)  # float16 storage


def test_decode_workers_follow_the_encoder_weight(encoder224, tmp_path, monkeypatch):
    """A heavy image tower leaves decoding a small share of the CPU: few workers, so they do not
    contend with it; a light one is decode-bound: a worker per core (up to 8)."""
    from indexer.load import cpu_decode_workers
    from search.encoders.torch_clip import Encoder

    assert cpu_decode_workers(5.9, 2) == 1  # ViT-B-32 on 2 cores
    assert cpu_decode_workers(5.9, 16) == 2
    assert cpu_decode_workers(0.04, 2) == 2 and cpu_decode_workers(0.04, 64) == 8
    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    g = encoder224.image_gflops()
    assert 0 < g < 1  # the 2-layer test tower
    assert list((tmp_path / "cache" / "gflops").glob("*.txt")), "counted once per model, then cached"
    again = Encoder(encoder224.spec, device="cpu", runtime="torch")
    assert again.image_gflops() == pytest.approx(g)
