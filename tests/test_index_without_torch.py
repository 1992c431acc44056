"""`glimpse index` on CPU embeds through the model's ONNX bundle without importing torch.

Correctness only: the torch-free run stores the vectors the torch run stores
(images and captions, within the bundle's tolerance), marks the same files
failed, the first run with a model (no bundle yet) still works through torch
and leaves the bundle behind, int8 works torch-free too, and a decode worker
killed mid-run stops the run with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_images

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Runs the real CLI in-process and reports whether torch (or open_clip) was ever imported.
PROBE = """
import sys, runpy
sys.argv = ["glimpse", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("glimpse.cli", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "open_clip", "torchvision"})
print("IMPORTED:" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def run_index(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, GLIMPSE_HOME=str(home), HF_HUB_OFFLINE="1", **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "-v", "index", *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=str(REPO),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def imported(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1].removeprefix("IMPORTED:")


def stored(home: Path) -> tuple[dict, dict, dict]:
    """path -> image vector, (path, caption) -> caption vector, path -> error."""
    con = sqlite3.connect(home / "glimpse.db")
    try:
        images = {
            p: np.frombuffer(v, np.float16).astype(np.float32)
            for p, v in con.execute("SELECT path, vector FROM images WHERE vector IS NOT NULL")
        }
        captions = {
            (p, t): np.frombuffer(v, np.float16).astype(np.float32)
            for p, t, v in con.execute(
                "SELECT i.path, c.text, c.vector FROM captions c JOIN images i ON i.id = c.image_id"
            )
        }
        errors = {p: e for p, e in con.execute("SELECT path, error FROM images WHERE error IS NOT NULL")}
    finally:
        con.close()
    return images, captions, errors


@pytest.fixture
def corpus(tmp_path) -> Path:
    pics = tmp_path / "pics"
    make_images(pics, 10, size=(120, 90))
    make_images(pics, 8, start=100, ext=".jpg", size=(300, 200))
    (pics / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (pics / "img_0003.txt").write_text("a red circle on grey\n")
    (pics / "img_0101.txt").write_text("two blue shapes\n")
    return pics


def test_cpu_index_skips_torch_once_the_bundle_exists_and_stores_the_same_vectors(tiny_model, corpus, tmp_path):
    cache = {"GLIMPSE_CACHE_DIR": str(tmp_path / "cache")}  # no bundle yet for this model
    plain = run_index(tmp_path / "torch", str(corpus), "--model", tiny_model, env={**cache, "GLIMPSE_RUNTIME": "torch"})
    assert "torch" in imported(plain)
    assert not (tmp_path / "cache" / "onnx").exists() or not list((tmp_path / "cache" / "onnx").glob("query-*"))

    first = run_index(tmp_path / "first", str(corpus), "--model", tiny_model, env=cache)
    assert "torch" in imported(first)  # no bundle: the model is built in torch, and the bundle exported
    assert list((tmp_path / "cache" / "onnx").glob("query-*/meta.json"))

    later = run_index(tmp_path / "later", str(corpus), "--model", tiny_model, env=cache)
    assert imported(later) == "", imported(later)
    assert "no torch" in later.stderr

    want_img, want_cap, want_err = stored(tmp_path / "torch")
    assert len(want_img) == 18 and len(want_cap) == 2 and list(want_err) == [str(corpus / "broken.jpg")]
    for home in ("first", "later"):
        img, cap, err = stored(tmp_path / home)
        assert img.keys() == want_img.keys() and cap.keys() == want_cap.keys()
        assert err == want_err
        for k in want_img:
            np.testing.assert_allclose(img[k], want_img[k], atol=2e-3)  # float16 storage, bundle within 1e-4
        for k in want_cap:
            np.testing.assert_allclose(cap[k], want_cap[k], atol=2e-3)

    # A search over the torch-free index ranks like the torch one.
    def top(home):
        e = dict(os.environ, GLIMPSE_HOME=str(home), **cache)
        out = subprocess.run(
            [sys.executable, "-m", "glimpse.cli", "search", "red circle", "-k", "8", "--json"],
            capture_output=True,
            text=True,
            env=e,
            cwd=str(REPO),
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        return [Path(r["path"]).name for r in json.loads(out.stdout)]

    assert top(tmp_path / "later") == top(tmp_path / "torch")


def test_int8_index_runs_without_torch(tiny_model, corpus, tmp_path):
    cache = {"GLIMPSE_CACHE_DIR": str(tmp_path / "cache")}
    run_index(tmp_path / "fp32", str(corpus), "--model", tiny_model, env=cache)  # builds the bundle
    q = run_index(tmp_path / "int8", str(corpus), "--model", tiny_model, "--quantize", "int8", env=cache)
    assert imported(q) == "" and "onnx-int8" in q.stderr
    assert list((tmp_path / "cache" / "onnx").glob("query-*/image-int8.onnx"))
    fp32, _, _ = stored(tmp_path / "fp32")
    int8, _, _ = stored(tmp_path / "int8")
    assert int8.keys() == fp32.keys()
    cos = [float(fp32[k] @ int8[k]) / float(np.linalg.norm(fp32[k]) * np.linalg.norm(int8[k])) for k in fp32]
    assert min(cos) > 0.95, min(cos)


def test_killed_decode_worker_stops_the_run_with_a_clear_error(tmp_path):
    import multiprocessing

    from indexer.load import DecodeWorkerDied, iter_batches
    from search.encoders import pil_steps

    paths = [str(p) for p in make_images(tmp_path / "pics", 40, size=(64, 64))]
    steps = [
        {"op": "resize", "size": 32, "interpolation": "bicubic"},
        {"op": "center_crop", "size": [32, 32], "fill": 0},
    ]
    batches = iter_batches(paths, pil_steps.compose(steps), 32, batch_size=2, workers=1)
    try:
        first = next(batches)
        assert [b.index for b in first] == [0, 1] and first[0].pixels.shape == (32, 32, 3)
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(DecodeWorkerDied, match="decode worker process died"):
            for _ in batches:
                pass
    finally:
        batches.close()
