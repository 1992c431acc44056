"""The torch-free query path (ONNX bundle) gives what the torch path gives.

Correctness only: the same token ids, the same preprocessed pixels, vectors
within tolerance, the same rankings, and a server process that answers
queries without ever importing torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, make_images

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_tokenizer_matches_open_clip_on_demo_captions_and_odd_text(tmp_path):
    import open_clip

    from search.encoders import tokenizer as ct

    tok = open_clip.get_tokenizer("ViT-B-32")
    ours = ct.ClipTokenizer(str(tmp_path / "t.json"), **ct.convert(tok, str(tmp_path / "t.json")))
    captions = []
    with open(REPO / "demo" / "corpus" / "captions.jsonl") as f:
        for line in f:
            row = json.loads(line)
            captions.extend(row.get("captions") or [row.get("caption", "")])
    rng = np.random.default_rng(0)
    # Random text over the first 12k code points, minus unassigned ones: the Python `regex` module and
    # the Rust tokenizer ship different Unicode versions, so they may classify those differently.
    assigned = [c for c in range(32, 0x2FFF) if unicodedata.category(chr(c)) != "Cn"]
    odd = ["".join(chr(int(c)) for c in rng.choice(assigned, size=int(n))) for n in rng.integers(0, 90, 300)]
    texts = ct.PROBE_TEXTS + captions + odd
    assert len(captions) > 100
    assert ct.same_as(tok, ours, texts) is None
    assert ours(["a " * 200])[0, -1] == ours.eot  # truncation keeps the end token, as open_clip does


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_replayed_preprocessing_is_pixel_identical(mode):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from search.encoders import pil_steps
    from search.encoders.torch_clip import _split_transform

    pre = image_transform_v2(
        PreprocessCfg(size=64, resize_mode=mode, fill_color=255 if mode == "longest" else 0), is_train=False
    )
    pil, _, _ = _split_transform(pre)
    steps = pil_steps.describe(pil)
    rng = np.random.default_rng(1)
    for w, h in [(300, 200), (200, 300), (64, 64), (10, 7), (1000, 333), (65, 2000)]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert np.array_equal(np.asarray(pil(im)), np.asarray(pil_steps.apply(steps, im))), (mode, w, h)


def test_bundle_vectors_match_torch(tiny_encoder):
    from search.encoders.onnx_bundle import OnnxQueryEncoder, ensure_bundle

    q = OnnxQueryEncoder(ensure_bundle(tiny_encoder))
    texts = ["a red circle", "blue", "", "naïve café"]
    np.testing.assert_allclose(q.encode_texts(texts), tiny_encoder.encode_texts(texts), atol=1e-4)
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((90, 60), (40, 120))]
    np.testing.assert_allclose(q.encode_pil(images), tiny_encoder.encode_pil(images), atol=1e-4)
    assert q.dim == tiny_encoder.dim and q.image_size == tiny_encoder.image_size


def test_text_tower_runs_over_the_tokens_up_to_the_last_end(tiny_encoder):
    """A causal text tower pooled at the end-of-text token gives the same vectors without the padding after
    it: the bundle cuts it (a short query runs over a few positions, not the context's), alone or batched with
    a long text, and matches torch on the full context; the tokens handed to ONNX Runtime show the cut."""
    from search.encoders.onnx_bundle import OnnxQueryEncoder, ensure_bundle

    q = OnnxQueryEncoder(ensure_bundle(tiny_encoder))
    assert q._tokens_to_end
    given: list[tuple[int, int]] = []
    session = q.text

    class Recording:  # the real session, its inputs' shapes noted
        def get_inputs(self):
            return session.get_inputs()

        def run(self, names, feed):
            given.append(next(iter(feed.values())).shape)
            return session.run(names, feed)

    q._sessions["text"] = Recording()
    long = "a photo of " + "a very long caption " * 20
    for texts in (["cat"], ["red circle", "blue"], ["cat", long], [long], ["", "!"]):
        np.testing.assert_allclose(q.encode_texts(texts), tiny_encoder.encode_texts(texts), atol=1e-4)
    context = tiny_encoder.tokenizer(["x"]).shape[1]
    # start, the words, end: as many positions as the batch's longest text needs ("!" is token 0, like padding)
    assert given == [(1, 3), (2, 4), (2, context), (1, context), (2, 3)]


def test_a_cut_text_tower_that_differs_from_torch_is_exported_whole(tiny_encoder, tmp_path, monkeypatch):
    """The cut is an optimisation checked like the rest of the bundle: one that does not give torch's vectors
    (here a deliberately wrong one) is replaced by the whole tower, and the bundle still serves."""
    import torch

    import search.encoders.torch_clip as torch_clip
    from search.encoders import onnx_bundle as query_bundle

    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    real = torch_clip.truncatable_text

    def wrong(model):
        tower = real(model)

        class Off(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.tower = tower

            def forward(self, text):
                return self.tower(text) * 1.01 + 0.01

        return Off()

    monkeypatch.setattr(torch_clip, "truncatable_text", wrong)
    q = query_bundle.OnnxQueryEncoder(query_bundle.ensure_bundle(tiny_encoder))
    assert not q._tokens_to_end
    texts = ["a red circle", "blue"]
    np.testing.assert_allclose(q.encode_texts(texts), tiny_encoder.encode_texts(texts), atol=1e-4)


def test_unfinished_bundle_is_ignored_and_rebuilt(tiny_encoder, tmp_path, monkeypatch):
    from search.encoders import onnx_bundle as query_bundle

    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    folder = query_bundle.bundle_dir(tiny_encoder.spec)
    os.makedirs(folder)
    open(os.path.join(folder, "text.onnx"), "wb").write(b"half a file")  # a build killed mid-way
    assert query_bundle.open_bundle(tiny_encoder.spec) is None
    with pytest.raises(OSError):
        query_bundle.ensure_bundle(tiny_encoder)  # refuses to replace a folder it did not finish
    os.unlink(os.path.join(folder, "text.onnx"))
    os.rmdir(folder)
    assert query_bundle.open_bundle(tiny_encoder.spec) is None
    query_bundle.ensure_bundle(tiny_encoder)
    assert query_bundle.open_bundle(tiny_encoder.spec) is not None


def test_index_builds_bundle_and_server_process_never_imports_torch(tiny_model, home, tmp_path, glimpse):
    make_images(tmp_path / "pics", 12)
    glimpse("index", str(tmp_path / "pics"), "--model", tiny_model)
    want_torch = json.loads(
        glimpse("search", "red circle", "-k", "5", "--json", env={"GLIMPSE_RUNTIME": "torch"}).stdout
    )
    script = f"""
import json, sys
from search.engine import Engine
from web.app import create_app
eng = Engine.open({str(home)!r})
eng.warm()
client = create_app(eng).test_client()
text = client.get("/api/search?q=red+circle&k=5").get_json()
with open({str(tmp_path / "pics" / "img_0003.png")!r}, "rb") as f:
    image = client.post("/api/search/image?k=3", data={{"image": (f, "q.png")}}).get_json()
print(json.dumps({{"torch": "torch" in sys.modules, "backend": eng.encoder.backend, "text": text, "image": image}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=dict(os.environ, GLIMPSE_HOME=str(home)),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["backend"] == "onnx" and got["torch"] is False
    results = got["text"]["results"]
    assert [r["id"] for r in results] == [r["id"] for r in want_torch]
    np.testing.assert_allclose([r["score"] for r in results], [r["score"] for r in want_torch], atol=1e-3)
    assert got["image"]["results"][0]["path"].endswith("img_0003.png")


def test_cli_search_runs_without_torch(tiny_model, home, tmp_path, glimpse):
    """`glimpse search` (and `serve`, through the same engine) must not pay torch's import."""
    make_images(tmp_path / "pics", 6)
    glimpse("index", str(tmp_path / "pics"), "--model", tiny_model)
    probe = (
        "import sys, runpy; sys.argv = ['glimpse', 'search', 'red', '--json'];\n"
        "try:\n    runpy.run_module('glimpse.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=dict(os.environ, GLIMPSE_HOME=str(home)),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout[: out.stdout.rindex("]") + 1])  # results were printed
    assert out.stdout.strip().endswith("NO-TORCH")


def test_model_without_bundle_support_is_refused_once_and_remembered(tiny_encoder, tmp_path, monkeypatch):
    from search.encoders import onnx_bundle as query_bundle
    from search.encoders import tokenizer as clip_tokenizer

    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def unsupported(tokenizer, path):
        calls.append(path)
        raise clip_tokenizer.UnsupportedTokenizer("tokenizer HFTokenizer")

    monkeypatch.setattr(clip_tokenizer, "convert", unsupported)
    for _ in range(2):
        with pytest.raises(clip_tokenizer.UnsupportedTokenizer if not calls else query_bundle.UnsupportedModel):
            query_bundle.ensure_bundle(tiny_encoder)
    assert len(calls) == 1  # the second start does not export again
    assert query_bundle.open_bundle(tiny_encoder.spec) is None
