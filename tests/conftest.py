"""Shared fixtures: a tiny random-weight open_clip model, generated images, CLI runner.

Nothing here touches the network: the model is a tiny config with random
weights written as a ``local-dir:`` folder, the images are drawn by Pillow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Reading text (OCR, on by default) costs about a second per image on 2 cores: tests that index images
# for anything else leave it off; tests/test_ocr*.py turn it on (--ocr).
os.environ.setdefault("GLIMPSE_OCR", "off")
# ONNX exports of test models go to a throwaway cache, not the user's ~/.cache (subprocesses inherit it);
# made only when none is set, and removed at the end of the session (pytest_unconfigure), failed or not.
_OWN_CACHE: str | None = None
if not os.environ.get("GLIMPSE_CACHE_DIR"):
    _OWN_CACHE = tempfile.mkdtemp(prefix="glimpse-test-cache-")
    os.environ["GLIMPSE_CACHE_DIR"] = _OWN_CACHE

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "test-output"


def pytest_unconfigure(config) -> None:
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> str:
    """The ``--model`` value for the tiny model."""
    return f"local-dir:{tiny_model_dir}"


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    from search.encoders.torch_clip import Encoder, ModelSpec

    return Encoder(ModelSpec.parse(tiny_model), device="cpu")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("GLIMPSE_HOME", str(h))
    return h


def draw_image(seed: int, size=(96, 80), mode: str = "RGB") -> Image.Image:
    """A distinct image per seed: random background colour, shapes and noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    arr = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(8, w)), y0 + int(rng.integers(8, h))
        d.ellipse([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return img.convert(mode) if mode != "RGB" else img


def make_images(folder: Path, n: int, start: int = 0, ext: str = ".png", size=(96, 80)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"img_{i:04d}{ext}"
        draw_image(i, size).save(p)
        out.append(p)
    return out


@pytest.fixture
def image_factory():
    return make_images


def glimpse_cmd(
    *args: str,
    home: Path | None = None,
    check: bool = True,
    timeout: float = 300,
    env: dict | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run the real `glimpse` CLI in a subprocess (as a user would); ``input`` is its stdin."""
    e = dict(os.environ, **(env or {}))
    if home is not None:
        e["GLIMPSE_HOME"] = str(home)
    e.setdefault("HF_HUB_OFFLINE", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "glimpse.cli", *args],
        input=input,
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
        cwd=str(REPO),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"glimpse {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def glimpse(home):
    def run(*args, check=True, **kw):
        return glimpse_cmd(*args, home=home, check=check, **kw)

    return run


def search_json(glimpse, *args) -> list[dict]:
    return json.loads(glimpse("search", *args, "--json").stdout)


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT
