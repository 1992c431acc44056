"""The nvJPEG path of `glimpse index` (indexer.gpu_decode) gives the vectors the PIL path gives.

torchvision decodes JPEG byte tensors on CPU as well as with nvJPEG on CUDA, so the
whole path (raw bytes from the workers, batched decode, EXIF orientation, resize and
crop replayed on tensors, fallback to PIL) runs here on CPU; the test at the end
repeats the comparison through `glimpse index` on a real GPU when there is one.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import draw_image
from test_fast_paths import encoder224, photos, reference_vectors  # noqa: F401 - fixtures

pytest.importorskip("torchvision.io")


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "JPEG", quality=90, **kw)
    return b.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(orientation):
    from indexer.gpu_decode import orient
    from search.media.decode import load_rgb, probe

    img = draw_image(3, (64, 40))
    exif = img.getexif()
    exif[0x0112] = orientation
    data = _jpeg_bytes(img, exif=exif.tobytes())
    meta = probe(data)
    assert meta["orientation"] == orientation
    want = np.asarray(load_rgb(data))
    plain = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    got = orient(plain, meta["orientation"]).permute(1, 2, 0).numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
def test_tensor_preprocessing_matches_pil(mode):
    """Resize + crop (or pad) on tensors lands on Pillow's pixels, give or take a grey level
    (Pillow rounds to uint8 between its horizontal and vertical passes, which moves a few
    overshooting edge pixels further)."""
    from open_clip.transform import image_transform

    from indexer.gpu_decode import preprocess, replayable
    from search.encoders.pil_steps import apply, describe
    from search.encoders.torch_clip import _split_transform

    steps = describe(_split_transform(image_transform(224, is_train=False, resize_mode=mode))[0])
    assert replayable(steps)
    for size in [(1024, 768), (300, 700), (150, 100), (224, 224)]:
        img = draw_image(sum(size), size)
        want = np.asarray(apply(steps, img)).astype(int)
        got = preprocess(torch.from_numpy(np.array(img)).permute(2, 0, 1), steps).numpy().astype(int)
        assert got.shape == want.shape == (224, 224, 3)
        diff = np.abs(got - want)
        assert diff.mean() < 0.3 and (diff > 2).mean() < 0.005, (mode, size, diff.mean(), (diff > 2).mean())


@pytest.fixture
def odd_files(tmp_path):
    """What the GPU path must hand to PIL: truncated, progressive, CMYK, not an image, a PNG."""
    img = draw_image(11, (640, 480))
    whole = _jpeg_bytes(img)
    files = {
        "truncated.jpg": whole[: len(whole) // 2],
        "progressive.jpg": _jpeg_bytes(img, progressive=True),
        "cmyk.jpg": _jpeg_bytes(img.convert("CMYK")),
        "text.jpg": b"this is not an image\n" * 20,
    }
    paths = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths[name] = str(tmp_path / name)
    img.save(tmp_path / "plain.png")
    paths["plain.png"] = str(tmp_path / "plain.png")
    return paths


def _raw_path_vectors(enc, paths, workers):
    """What `glimpse index --decode gpu` computes, with torchvision's CPU decoder standing in for nvJPEG."""
    from indexer.gpu_decode import replayable
    from indexer.load import iter_batches
    from indexer.pixels import batch_pixels
    from search.encoders.pil_steps import describe

    steps = describe(enc.pil_transform)
    assert replayable(steps)
    vectors, errors, raw_seen = {}, {}, 0
    for batch in iter_batches(paths, enc.pil_transform, enc.image_size, batch_size=4, workers=workers, raw_jpeg=True):
        raw_seen += sum(b.jpeg is not None for b in batch)
        ok, pixels = batch_pixels(batch, enc, steps)
        if ok:
            vectors.update({b.index: v for b, v in zip(ok, enc.encode_pixels(pixels))})
        errors.update({b.index: b.error for b in batch if b.error})
    return vectors, errors, raw_seen


@pytest.mark.parametrize("workers", [0, 2])
def test_raw_jpeg_path_matches_plain_open_clip(encoder224, photos, workers):
    """Raw bytes decoded in the main process, alone or mixed in one batch with worker-decoded images;
    same-size images are resized together."""
    photos = photos[:3] + photos + photos[1:2]  # batches of 4 then hold same-size pairs
    ref = reference_vectors(encoder224, photos)
    vectors, errors, raw_seen = _raw_path_vectors(encoder224, photos, workers)
    assert not errors
    assert raw_seen == sum(p.endswith(".jpg") for p in photos)  # every JPEG took the raw path, the PNG did not
    got = np.stack([vectors[i] for i in range(len(photos))])
    cos = (got * ref).sum(axis=1)
    assert cos.min() > 0.995, cos


def test_raw_jpeg_path_hands_odd_files_to_pil(encoder224, odd_files):
    from indexer.decode import load_file

    names = list(odd_files)
    vectors, errors, raw_seen = _raw_path_vectors(encoder224, [odd_files[n] for n in names], workers=0)
    assert raw_seen == 0  # none of these is a complete baseline RGB JPEG
    for i, name in enumerate(names):
        cpu = load_file(i, odd_files[name], encoder224.pil_transform, encoder224.image_size)
        if cpu.error:
            assert errors.get(i) == cpu.error, name  # the same clear error as the CPU path (header check or PIL)
            assert i not in vectors
        else:
            assert i in vectors and i not in errors, name
    assert set(errors) == {names.index("truncated.jpg"), names.index("text.jpg")}


def test_decode_choice(encoder224):
    from indexer.pixels import gpu_decode_steps

    assert gpu_decode_steps(encoder224, "auto") is None  # CPU encoder: workers decode
    assert gpu_decode_steps(encoder224, "cpu") is None
    with pytest.raises(ValueError, match="nvJPEG"):
        gpu_decode_steps(encoder224, "gpu")
    with pytest.raises(ValueError, match="decode mode"):
        gpu_decode_steps(encoder224, "fpga")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_decode_gpu_without_a_gpu_fails_fast_and_records_nothing(tiny_model, tmp_path):
    from conftest import glimpse_cmd, make_images
    from search.store.database import Store

    make_images(tmp_path / "pics", 3)
    home = tmp_path / "home"
    proc = glimpse_cmd(
        "index", str(tmp_path / "pics"), "--model", tiny_model, "--decode", "gpu", home=home, check=False
    )
    assert proc.returncode == 1
    assert "--decode gpu: no nvJPEG decoder" in proc.stderr
    store = Store(home / "glimpse.db")
    try:
        assert store.recent_jobs(5) == []  # a usage mistake is not a failed job to resume
    finally:
        store.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_index_decode_modes_agree(tiny_model, tmp_path):
    """On a GPU: `glimpse index` with nvJPEG stores the vectors PIL decoding stores."""
    from conftest import glimpse_cmd
    from search.store.database import Store
    from search.store.schema import ImageRow, unpack_vectors

    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(40):
        img = draw_image(200 + i, (800 + 8 * i, 600))
        if i % 5 == 0:
            exif = img.getexif()
            exif[0x0112] = 6
            img.save(pics / f"p{i}.jpg", "JPEG", quality=90, exif=exif.tobytes())
        else:
            img.save(pics / f"p{i}.jpg", "JPEG", quality=90)
    (pics / "broken.jpg").write_bytes((pics / "p1.jpg").read_bytes()[:5000])
    stored = {}
    for mode in ("gpu", "cpu"):
        home = tmp_path / f"home-{mode}"
        glimpse_cmd(
            "index",
            str(pics),
            "--model",
            tiny_model,
            "--device",
            "cuda",
            "--decode",
            mode,
            "--batch-size",
            "16",
            home=home,
        )
        store = Store(home / "glimpse.db")
        with store.session() as s:
            rows = s.query(ImageRow.path, ImageRow.vector, ImageRow.status).all()
        store.close()
        assert {p.rsplit("/", 1)[1]: st for p, _, st in rows}["broken.jpg"] == "failed"
        good = [(p, v) for p, v, st in rows if st == "indexed"]
        stored[mode] = dict(zip([p for p, _ in good], unpack_vectors([v for _, v in good], 32)))
    assert stored["gpu"].keys() == stored["cpu"].keys() and len(stored["gpu"]) == 40
    cos = np.array([float(stored["gpu"][p] @ stored["cpu"][p]) for p in stored["gpu"]])
    assert cos.min() > 0.98, cos  # nvJPEG at full resolution vs PIL draft mode, fp16 on both


def test_raw_workers_bounded_by_memory(monkeypatch):
    """Raw batches hold whole files: big photos get fewer workers so the bytes in flight stay bounded."""
    import indexer.pixels as pixels

    monkeypatch.setenv("GLIMPSE_RAW_INFLIGHT_MB", "1024")  # read when the workers are counted
    small = pixels.raw_batch_workers(15, 256, [400_000] * 10)  # 0.2 GB per worker in flight
    big = pixels.raw_batch_workers(15, 256, [5_000_000] * 10)  # 2.6 GB per worker: over budget alone
    assert small == 5 and big == 1
    assert pixels.raw_batch_workers(15, 256, [1_000] * 10) == 15  # never more than asked for
