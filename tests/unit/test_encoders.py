"""search.encoders.protocol: the encoder Protocol both kinds satisfy, and the one factory's choices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from search.encoders.model_spec import ModelSpec
from search.encoders.protocol import ImageTextEncoder, open_encoder


@pytest.fixture(scope="module")
def onnx_encoder(tiny_encoder):
    from search.encoders.onnx_bundle import OnnxQueryEncoder, ensure_bundle

    return OnnxQueryEncoder(ensure_bundle(tiny_encoder))


def test_both_encoder_kinds_satisfy_the_protocol(tiny_encoder, onnx_encoder):
    for enc in (tiny_encoder, onnx_encoder):
        assert isinstance(enc, ImageTextEncoder), type(enc).__name__
        assert enc.encode_texts(["a red circle"]).shape == (1, enc.dim)
        assert enc.encode_texts([]).shape == (0, enc.dim)
    assert (tiny_encoder.dim, tiny_encoder.image_size) == (onnx_encoder.dim, onnx_encoder.image_size)


def test_an_object_missing_an_encode_path_is_not_an_encoder(onnx_encoder):
    class TextOnly:
        spec, device, precision, backend, dim, image_size = onnx_encoder.spec, "cpu", "fp32", "onnx", 32, 32
        pil_transform = staticmethod(onnx_encoder.pil_transform)
        encode_texts = staticmethod(onnx_encoder.encode_texts)

    assert not isinstance(TextOnly(), ImageTextEncoder)


def test_unknown_purpose_is_refused(tiny_model):
    with pytest.raises(ValueError, match="purpose"):
        open_encoder(ModelSpec.parse(tiny_model), "train")  # type: ignore[arg-type]


def test_torch_runtime_setting_gives_the_torch_encoder(tiny_model, onnx_encoder, monkeypatch):
    from search.encoders.torch_clip import Encoder

    monkeypatch.setenv("GLIMPSE_RUNTIME", "torch")
    for purpose in ("query", "index"):
        enc = open_encoder(ModelSpec.parse(tiny_model), purpose, device="cpu")
        assert type(enc) is Encoder and enc.backend == "torch"


def test_query_encoder_without_a_bundle_builds_it(tiny_model, tmp_path, monkeypatch):
    from search.encoders.onnx_bundle import OnnxQueryEncoder, open_bundle

    monkeypatch.setenv("GLIMPSE_CACHE_DIR", str(tmp_path / "cache"))
    spec = ModelSpec.parse(tiny_model)
    assert open_bundle(spec) is None
    enc = open_encoder(spec, "query")
    assert isinstance(enc, OnnxQueryEncoder) and open_bundle(spec) is not None


# Opens the encoder in a fresh process and reports what it got and whether torch was imported.
PROBE = """
import json, sys
from search.encoders.protocol import ImageTextEncoder, open_encoder
from search.encoders.model_spec import ModelSpec
enc = open_encoder(ModelSpec.parse(sys.argv[1]), sys.argv[2], device=sys.argv[3] or None, quantize=sys.argv[4] or None)
vec = enc.encode_texts(["a red circle"])
print(json.dumps({"kind": type(enc).__name__, "backend": enc.backend, "protocol": isinstance(enc, ImageTextEncoder),
                  "torch": sorted({m.split(".")[0] for m in sys.modules} & {"torch", "open_clip", "torchvision"}),
                  "norm": float((vec ** 2).sum())}))
"""


@pytest.mark.parametrize(
    "purpose, device, quantize, backend",
    [
        ("query", "", "", "onnx"),  # a server's default: no device named
        ("index", "cpu", "", "onnx"),
        ("index", "cpu", "int8", "onnx-int8"),
    ],
)
def test_cpu_encoder_is_the_onnx_bundle_without_importing_torch(
    tiny_model, onnx_encoder, purpose, device, quantize, backend
):
    env = {k: v for k, v in os.environ.items() if k not in ("GLIMPSE_RUNTIME", "GLIMPSE_QUANTIZE")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, tiny_model, purpose, device, quantize],
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["kind"] == "OnnxQueryEncoder" and got["backend"] == backend and got["protocol"]
    assert got["torch"] == []
    assert np.isclose(got["norm"], 1.0, atol=1e-4)
